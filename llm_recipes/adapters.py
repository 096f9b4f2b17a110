"""Parameter-efficient fine-tuning through `peft`, one switch for every recipe: `peft_type: lora | adalora | ia3`.

The task type decides what stays fully trainable: for SEQ_CLS, peft keeps the classifier head (`score` in LLaMA,
`classifier` in BERT) in `modules_to_save`. AdaLoRA re-allocates ranks on a schedule over the whole run, so it needs
the total step count (the recipe supplies it) and a call after every optimizer step (`AdaLoraCallback`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
from peft import AdaLoraConfig, IA3Config, LoraConfig, PeftConfig
from transformers import TrainerCallback

from llm_recipes.config import ConfigError

logger = logging.getLogger(__name__)
PEFT_TYPES = ("none", "lora", "adalora", "ia3")


@dataclass
class PeftArguments:
    peft_type: str = field(
        default="none", metadata={"help": "none (full fine-tuning), lora, adalora or ia3.", "choices": PEFT_TYPES})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank (AdaLoRA: the average rank it ends with)."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling numerator (scale = alpha / r)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA / AdaLoRA input."})
    lora_target_modules: list[str] | None = field(
        default=None,
        metadata={"help": "Modules to adapt; default: all linear layers (LoRA, AdaLoRA), peft's per-model default "
                          "(IA3: keys, values and the feed-forward output)."})
    adalora_init_r: int | None = field(
        default=None, metadata={"help": "AdaLoRA: rank of every module before pruning (> lora_r); default 1.5 lora_r."})
    adalora_warmup_fraction: float = field(
        default=0.1, metadata={"help": "AdaLoRA tinit: share of the steps trained before ranks are pruned."})
    adalora_final_fraction: float = field(
        default=0.2, metadata={"help": "AdaLoRA tfinal: share of the steps at the end with the ranks frozen."})


def peft_config(args: PeftArguments, task_type: str, total_steps: int | None = None,
                modules_to_save: list[str] | None = None) -> PeftConfig | None:
    """The peft config for `args.peft_type` (None for full fine-tuning); `modules_to_save` are trained in full."""
    if args.peft_type == "none":
        return None
    if args.peft_type not in PEFT_TYPES:
        raise ConfigError(f"peft_type {args.peft_type!r}: choose one of {', '.join(PEFT_TYPES)}")
    targets = args.lora_target_modules
    if args.peft_type == "lora":
        return LoraConfig(task_type=task_type, r=args.lora_r, lora_alpha=args.lora_alpha,
                          lora_dropout=args.lora_dropout, target_modules=targets or "all-linear",
                          modules_to_save=modules_to_save)
    if args.peft_type == "ia3":
        return IA3Config(task_type=task_type, target_modules=targets, modules_to_save=modules_to_save)
    if not total_steps:
        raise ConfigError("peft_type adalora needs the run's total steps: set max_steps or num_train_epochs")
    tinit = int(total_steps * args.adalora_warmup_fraction)
    tfinal = int(total_steps * args.adalora_final_fraction)
    if tinit >= total_steps - tfinal:
        raise ConfigError(f"adalora: warmup ({tinit} steps) and final ({tfinal}) phases leave no step of the "
                          f"{total_steps} to re-allocate ranks in; lower the fractions or train longer")
    init_r = args.adalora_init_r or max(args.lora_r + 1, round(1.5 * args.lora_r))
    if init_r <= args.lora_r:
        raise ConfigError(f"adalora_init_r {init_r} must exceed lora_r {args.lora_r}: AdaLoRA prunes down to lora_r")
    return AdaLoraConfig(task_type=task_type, init_r=init_r, target_r=args.lora_r,
                         lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                         target_modules=targets or "all-linear", total_step=total_steps, tinit=tinit, tfinal=tfinal,
                         deltaT=max(1, (total_steps - tinit - tfinal) // 10), modules_to_save=modules_to_save)


def adalora_keeps_last_model(args) -> None:
    """peft 0.21 saves AdaLoRA adapters cut to their pruned ranks and cannot load them back into the model being
    trained (shape mismatch), which load_best_model_at_end needs: turn it off, saying so."""
    if args.load_best_model_at_end:
        logger.warning("adalora: load_best_model_at_end and early stopping are off (peft cannot reload a pruned "
                       "AdaLoRA checkpoint into the training model); the final model is the last step's")
        args.load_best_model_at_end = False


class AdaLoraCallback(TrainerCallback):
    """AdaLoRA's rank budget update, after each optimizer step while the gradients are still there (peft does not
    hook into the Trainer itself)."""

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        model = getattr(model, "module", model)  # DDP wrapper
        model.base_model.update_and_allocate(state.global_step)


def trl_peft_config(model_args, peft_type: str, args) -> tuple[PeftConfig | None, list[TrainerCallback]]:
    """The peft config of a TRL recipe (its ModelConfig's use_peft and lora_* keys) for `peft_type`, and the callbacks
    it needs: lora is TRL's own (DoRA, rsLoRA, QLoRA flags apply); adalora and ia3 the switch recipes/classify.py
    uses. AdaLoRA trains to the last step (adalora_keeps_last_model)."""
    from trl import get_peft_config

    if not model_args.use_peft or peft_type == "lora":
        return get_peft_config(model_args), []
    callbacks = []
    if peft_type == "adalora":
        adalora_keeps_last_model(args)
        callbacks.append(AdaLoraCallback())
    return peft_config(PeftArguments(peft_type=peft_type, lora_r=model_args.lora_r, lora_alpha=model_args.lora_alpha,
                                     lora_dropout=model_args.lora_dropout,
                                     lora_target_modules=model_args.lora_target_modules),
                       "CAUSAL_LM", args.max_steps if args.max_steps > 0 else None,
                       model_args.lora_modules_to_save), callbacks


def check_quantized_training(model_args, args) -> None:
    """QLoRA (TRL ModelConfig load_in_4bit / 8bit): adapters only, no ZeRO-3, and a bitsandbytes that can run k-bit
    kernels on this machine; one clear line if not."""
    if not (model_args.load_in_4bit or model_args.load_in_8bit):
        return
    if not model_args.use_peft:
        raise ConfigError("load_in_4bit / load_in_8bit train adapters only: set use_peft: true (QLoRA)")
    if args.deepspeed_plugin is not None and args.deepspeed_plugin.zero_stage == 3:
        raise ConfigError("QLoRA (load_in_4bit/8bit) does not combine with DeepSpeed ZeRO-3 here: launch with "
                          "launch/accelerate/single.yaml or ddp.yaml")
    bits = "4-bit" if model_args.load_in_4bit else "8-bit"
    try:
        import bitsandbytes as bnb
    except ImportError:
        raise ConfigError(f"load_in_{bits[0]}bit (QLoRA) needs bitsandbytes, which is not installed "
                          f"(pip install bitsandbytes); or train LoRA without quantization: "
                          f"--load_in_{bits[0]}bit false") from None
    device = "cuda" if torch.cuda.is_available() else "cpu"
    try:  # a real k-bit round trip on the device the model will use
        x = torch.randn(64, 64, generator=torch.Generator().manual_seed(0)).to(device)
        if model_args.load_in_4bit:  # NF4/FP4 of N(0, 1): mean abs error ~0.07
            q, state = bnb.functional.quantize_4bit(x, quant_type=model_args.bnb_4bit_quant_type)
            ok = (bnb.functional.dequantize_4bit(q, state).float() - x).abs().mean().item() < 0.2
        else:
            ok = bnb.functional.int8_vectorwise_quant(x.half())[0].dtype == torch.int8
    except Exception as e:  # noqa: BLE001 - any failure of the kernel means: cannot run here
        raise ConfigError(f"bitsandbytes {bnb.__version__} cannot run {bits} on {device} here "
                          f"({type(e).__name__}: {str(e).splitlines()[0][:200]}); use a GPU, or set "
                          f"load_in_{bits[0]}bit: false for plain LoRA") from None
    if not ok:
        raise ConfigError(f"bitsandbytes {bnb.__version__} {bits} round trip on {device} gives wrong values")
