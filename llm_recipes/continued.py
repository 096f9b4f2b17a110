"""Continued pretraining: start `recipes/pretrain.py` from an existing causal LM (our checkpoint, Llama-2-7B, any
folder or Hub id) instead of a random-init preset.

The weights load through transformers' `from_pretrained`, which under ZeRO-3 (the TrainingArguments have registered
DeepSpeed's config by then) loads each rank's shard inside `zero.Init`: no rank holds the whole model. The optimizer
and the learning-rate schedule start fresh (warmup included); `resume_from_checkpoint` is for resuming a run, not for
this. Two cheaper modes, the usual phases after a vocabulary extension: train only the input embedding and the LM
head, or LoRA adapters with both of them trained in full (`modules_to_save`), merged later with `make merge-lora`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields

import torch
from peft import get_peft_model
from transformers import AutoConfig, AutoModelForCausalLM

from llm_recipes.adapters import PeftArguments, peft_config
from llm_recipes.config import ConfigError
from llm_recipes.model import SHAPE_FIELDS
from llm_recipes.training import parameter_counts

logger = logging.getLogger(__name__)
EMBEDDINGS = ("embed_tokens", "lm_head")


@dataclass
class ContinueArguments(PeftArguments):
    model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Continue pretraining this model (folder or Hub id) instead of a random-init model_preset: "
                          "weights loaded, fresh optimizer and schedule."})
    train_only_embeddings: bool = field(
        default=False,
        metadata={"help": "Freeze everything but the input embedding and the LM head (the first phase after a "
                          "vocabulary extension)."})
    modules_to_save: list[str] = field(
        default_factory=lambda: list(EMBEDDINGS),
        metadata={"help": "With peft_type lora (or adalora, ia3): modules trained in full beside the adapters and "
                          "saved with them; new token rows only learn through them."})


def check_continue(model_args, cont: ContinueArguments) -> None:
    """One way to get a model: a preset (with shape overrides) or a model to continue; the modes need the latter."""
    if cont.model_name_or_path is None:
        if cont.train_only_embeddings or cont.peft_type != "none":
            raise ConfigError("train_only_embeddings and peft_type continue an existing model: set model_name_or_path")
        return
    shape = [f.name for f in fields(model_args) if f.name in SHAPE_FIELDS and getattr(model_args, f.name) is not None]
    if model_args.model_preset or shape:
        given = ", ".join(["model_preset"] * bool(model_args.model_preset) + shape)
        raise ConfigError(f"model_name_or_path and {given} both set: a continued model keeps its own shape; drop one")
    if cont.train_only_embeddings and cont.peft_type != "none":
        raise ConfigError("train_only_embeddings and peft_type both set: choose frozen-body training or adapters")


def load_config(cont: ContinueArguments, tokenizer):
    """The model's own config, checked against the tokenizer; no KV cache in training."""
    try:
        config = AutoConfig.from_pretrained(cont.model_name_or_path, use_cache=False)
    except (OSError, ValueError) as e:
        raise ConfigError(f"model_name_or_path {cont.model_name_or_path}: {str(e).splitlines()[0]}") from None
    if len(tokenizer) > config.vocab_size:
        raise ConfigError(f"vocab mismatch: model {cont.model_name_or_path} has vocab_size {config.vocab_size}, the "
                          f"tokenizer {len(tokenizer)} tokens (an extended tokenizer needs its embeddings resized)")
    return config


def load_pretrained(cont: ContinueArguments, config, attn_implementation: str, total_steps: int):
    """The weights (fp32 master copy; bf16 comes from the Trainer's autocast), frozen or wrapped as the mode says."""
    model = AutoModelForCausalLM.from_pretrained(cont.model_name_or_path, config=config, dtype=torch.float32,
                                                 attn_implementation=attn_implementation)
    if cont.train_only_embeddings:
        for name, param in model.named_parameters():
            param.requires_grad = any(part in name.split(".") for part in EMBEDDINGS)
    adapters = peft_config(cont, "CAUSAL_LM", total_steps, cont.modules_to_save)
    if adapters is not None:
        model = get_peft_model(model, adapters)
    total, trainable = parameter_counts(model)
    logger.info("continuing %s: %s of %s parameters trainable", cont.model_name_or_path, f"{trainable:,}",
                f"{total:,}")
    return model
