"""Continued pretraining: start `recipes/pretrain.py` from an existing causal LM (our checkpoint, Llama-2-7B, any
folder or Hub id) instead of a random-init preset.

The weights load through transformers' `from_pretrained`, which under ZeRO-3 (the TrainingArguments have registered
DeepSpeed's config by then) loads each rank's shard inside `zero.Init`: no rank holds the whole model. The optimizer
and the learning-rate schedule start fresh (warmup included); `resume_from_checkpoint` is for resuming a run, not for
this. Two cheaper modes, the usual phases after a vocabulary extension: train only the input embedding and the LM
head, or LoRA adapters with both of them trained in full (`modules_to_save`), merged later with `make merge-lora`.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
from peft import get_peft_model
from transformers import AutoConfig, AutoModelForCausalLM
from transformers.integrations import is_deepspeed_zero3_enabled

from llm_recipes.adapters import PeftArguments, peft_config
from llm_recipes.config import ConfigError
from llm_recipes.model import SHAPE_FIELDS, round_up
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


def extension_of(tokenizer) -> dict | None:
    """What recipes/extend_tokenizer.py recorded beside an extended tokenizer (None for any other tokenizer)."""
    path = Path(tokenizer.name_or_path) / "extension.json"
    return json.loads(path.read_text()) if path.is_file() else None


def load_config(cont: ContinueArguments, tokenizer, pad_to: int = 64):
    """The model's config as it will train: checked against the tokenizer, its vocab_size grown for an extended
    tokenizer (to a multiple of `pad_to`), no KV cache."""
    try:
        config = AutoConfig.from_pretrained(cont.model_name_or_path, use_cache=False)
    except (OSError, ValueError) as e:
        raise ConfigError(f"model_name_or_path {cont.model_name_or_path}: {str(e).splitlines()[0]}") from None
    extension = extension_of(tokenizer)
    if len(tokenizer) > config.vocab_size and not (extension and extension["base_vocab_size"] <= config.vocab_size):
        raise ConfigError(f"vocab mismatch: model {cont.model_name_or_path} has vocab_size {config.vocab_size}, the "
                          f"tokenizer {len(tokenizer)} tokens, and it is no extension of the model's tokenizer "
                          "(make extend-tokenizer writes extension.json, from which the new rows are initialised)")
    if len(tokenizer) > config.vocab_size:
        config.vocab_size = round_up(len(tokenizer), pad_to)
    return config


def resize_for_extension(model, extension: dict, vocab_size: int) -> None:
    """Grow the input embedding and the LM head to `vocab_size` rows; each new token's rows start as the mean of the
    rows of the base tokens it used to split into (it then predicts and reads like its pieces on average), not at
    random. Under ZeRO-3 the rows are gathered for the edit and partitioned again."""
    model.resize_token_embeddings(vocab_size, mean_resizing=False)
    weights = [model.get_input_embeddings().weight]
    if model.get_output_embeddings() is not None and not model.config.tie_word_embeddings:
        weights.append(model.get_output_embeddings().weight)
    gathered = contextlib.nullcontext()
    if is_deepspeed_zero3_enabled():
        import deepspeed

        gathered = deepspeed.zero.GatheredParameters(weights, modifier_rank=0)
    with gathered, torch.no_grad():
        for weight in weights:
            for entry in extension["added"]:
                weight[entry["id"]] = weight[entry["base_pieces"]].mean(dim=0)
    logger.info("embeddings resized to %d rows; %d new tokens start as the mean of their base pieces", vocab_size,
                len(extension["added"]))


def load_pretrained(cont: ContinueArguments, config, attn_implementation: str, total_steps: int, tokenizer):
    """The weights (fp32 master copy; bf16 comes from the Trainer's autocast), the embeddings grown to `config`'s
    vocab_size for an extended tokenizer, then frozen or wrapped as the mode says."""
    model = AutoModelForCausalLM.from_pretrained(cont.model_name_or_path, dtype=torch.float32, use_cache=False,
                                                 attn_implementation=attn_implementation)
    if model.config.vocab_size < config.vocab_size:
        resize_for_extension(model, extension_of(tokenizer), config.vocab_size)
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
