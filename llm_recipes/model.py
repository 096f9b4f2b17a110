"""LLaMA model presets (configs/model/*.yaml) and the arithmetic users need to plan hardware.

A preset file holds the fields of `ModelArguments` (the LlamaConfig shape). A recipe points at one with
`model_preset: tiny` (a name in configs/model/) or a path, and may override any single field (`--num_hidden_layers 4`).
"""

from __future__ import annotations

import contextlib
import math
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
from transformers import LlamaConfig

from llm_recipes.config import ConfigError, RecipeParser
from llm_recipes.run_info import REPO_ROOT

PRESET_DIR = REPO_ROOT / "configs" / "model"


@dataclass
class ModelArguments:
    """The shape of a LLaMA-style decoder (RMSNorm, SwiGLU, RoPE). Unset fields come from `model_preset`."""

    model_preset: str | None = field(
        default=None,
        metadata={"help": "Preset name in configs/model/ (tiny, 160m, 1b, 7b) or path to a preset YAML file."},
    )
    hidden_size: int | None = field(default=None, metadata={"help": "Width of the residual stream."})
    intermediate_size: int | None = field(default=None, metadata={"help": "Inner width of the SwiGLU MLP."})
    num_hidden_layers: int | None = field(default=None, metadata={"help": "Number of decoder layers."})
    num_attention_heads: int | None = field(default=None, metadata={"help": "Query heads; head_dim = hidden/heads."})
    num_key_value_heads: int | None = field(
        default=None, metadata={"help": "Key/value heads (grouped-query attention); defaults to num_attention_heads."}
    )
    vocab_size: int | None = field(
        default=None, metadata={"help": "Vocabulary size; replaced by the tokenizer's size when a tokenizer is given."}
    )
    max_position_embeddings: int | None = field(default=None, metadata={"help": "Longest sequence (RoPE positions)."})
    rms_norm_eps: float | None = field(default=None, metadata={"help": "Epsilon of the RMSNorm layers."})
    rope_theta: float | None = field(default=None, metadata={"help": "Base of the rotary position embedding."})
    tie_word_embeddings: bool | None = field(
        default=None, metadata={"help": "Share the input embedding with the LM head (LLaMA: false)."}
    )
    initializer_range: float | None = field(default=None, metadata={"help": "Std of the normal weight init."})
    pad_vocab_to_multiple_of: int = field(
        default=64,
        metadata={"help": "Round a tokenizer-derived vocab size up to this multiple (tensor-core friendly shapes)."},
    )


SHAPE_FIELDS = tuple(f.name for f in fields(ModelArguments) if f.name not in ("model_preset", "pad_vocab_to_multiple_of"))
REQUIRED_FIELDS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size")


def preset_path(preset: str) -> Path:
    """`tiny` -> configs/model/tiny.yaml; a path is taken as it is."""
    candidate = Path(preset)
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        if not candidate.is_file():
            raise ConfigError(f"model preset file not found: {preset}")
        return candidate
    named = PRESET_DIR / f"{preset}.yaml"
    if not named.is_file():
        available = sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))
        raise ConfigError(f"unknown model preset '{preset}'; available: {', '.join(available)} (or a YAML path)")
    return named


def round_up(value: int, multiple: int) -> int:
    return int(math.ceil(value / multiple) * multiple) if multiple > 1 else value


def resolve_shape(args: ModelArguments) -> dict:
    """Preset values overlaid with the fields set in `args`."""
    shape: dict = {}
    if args.model_preset:
        (preset,) = RecipeParser(ModelArguments).parse(["--config", str(preset_path(args.model_preset))])
        shape.update({k: getattr(preset, k) for k in SHAPE_FIELDS if getattr(preset, k) is not None})
    shape.update({k: getattr(args, k) for k in SHAPE_FIELDS if getattr(args, k) is not None})
    missing = [k for k in REQUIRED_FIELDS if k not in shape]
    if missing:
        raise ConfigError(f"model shape incomplete, missing {', '.join(missing)}: set model_preset or these keys")
    return shape


def build_llama_config(args: ModelArguments, tokenizer=None, **extra) -> LlamaConfig:
    """LlamaConfig for the preset; with a tokenizer, vocab follows it and bos/eos/pad ids come from it."""
    shape = resolve_shape(args)
    rope_theta = shape.pop("rope_theta", 10000.0)
    if tokenizer is not None:
        shape["vocab_size"] = round_up(len(tokenizer), args.pad_vocab_to_multiple_of)
        extra.setdefault("bos_token_id", tokenizer.bos_token_id)
        extra.setdefault("eos_token_id", tokenizer.eos_token_id)
        extra.setdefault("pad_token_id", tokenizer.pad_token_id)
    if shape["hidden_size"] % shape["num_attention_heads"]:
        raise ConfigError(
            f"hidden_size {shape['hidden_size']} is not a multiple of num_attention_heads {shape['num_attention_heads']}"
        )
    return LlamaConfig(
        **shape,
        hidden_act="silu",
        rope_parameters={"rope_type": "default", "rope_theta": float(rope_theta)},
        **extra,
    )


def meta_model(config) -> torch.nn.Module:
    """The model of `config`'s architecture (ours, Qwen 2's, ...) on the meta device: shapes without memory, so even
    7B builds instantly."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    with torch.device("meta"):  # the class itself: from_config would enter DeepSpeed's zero.Init under ZeRO-3
        return MODEL_FOR_CAUSAL_LM_MAPPING[type(config)](config)


@dataclass(frozen=True)
class ParamCount:
    total: int
    embedding: int  # input embedding + (untied) LM head
    largest_layer: int  # largest single module's own parameters, as DeepSpeed's estimator wants it

    @property
    def non_embedding(self) -> int:
        return self.total - self.embedding


def count_parameters(model: torch.nn.Module) -> ParamCount:
    # Count by object identity, not data_ptr(): every meta tensor has data_ptr() == 0.
    unique = {id(p): p for p in model.parameters()}
    total = sum(p.numel() for p in unique.values())
    embedding_modules = [model.get_input_embeddings(), model.get_output_embeddings()]
    embedding_params = {id(p): p for m in embedding_modules if m is not None for p in m.parameters()}
    embedding = sum(p.numel() for p in embedding_params.values())
    largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in model.modules())
    return ParamCount(total=total, embedding=embedding, largest_layer=largest)


def training_flops_per_token(config, n_params: int, seq_len: int, trainable: int | None = None) -> int:
    """6N for the matmuls forward+backward, plus 12·L·H·T for attention scores (PaLM appendix B).

    With frozen weights (LoRA), the backward pass skips their weight gradients: 4N + 2·trainable instead of 6N.
    """
    trainable = n_params if trainable is None else trainable
    return 4 * n_params + 2 * trainable + 12 * config.num_hidden_layers * config.hidden_size * seq_len


def zero3_memory_estimates(params: ParamCount, num_gpus_per_node: int, num_nodes: int = 1) -> list[dict]:
    """DeepSpeed's own ZeRO-3 model-state estimate (params, grads, Adam states) for each offload option, in bytes.

    We call the estimator with explicit counts: its `_all_live` variant de-duplicates parameters by data_ptr(), which
    is 0 on the meta device, and under-counts a 7B model as 131M.
    """
    with contextlib.redirect_stdout(sys.stderr):  # DeepSpeed logs its accelerator choice to stdout at import
        from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs

    rows = []
    for offload_optimizer, offload_params in ((False, False), (True, False), (True, True)):
        cpu, gpu, _ = estimate_zero3_model_states_mem_needs(
            total_params=params.total,
            largest_layer_params=params.largest_layer,
            num_gpus_per_node=num_gpus_per_node,
            num_nodes=num_nodes,
            cpu_offload=offload_optimizer,
            cpu_offload_params=offload_params,
            zero_init=True,
        )
        rows.append(
            {
                "offload_optimizer": offload_optimizer,
                "offload_params": offload_params,
                "per_gpu_bytes": int(gpu),
                "per_cpu_node_bytes": int(cpu),
            }
        )
    return rows


def format_zero3_rows(rows: list[dict]) -> list[str]:
    """One line per offload option of `zero3_memory_estimates`, as model_info and pretrain --dry_run print them."""
    gib = 2**30
    lines = []
    for row in rows:
        offload = (
            "optimizer + params -> CPU" if row["offload_params"] else "optimizer -> CPU" if row["offload_optimizer"] else "none"
        )
        lines.append(
            f"  {row['per_gpu_bytes'] / gib:8.2f} GiB/GPU  {row['per_cpu_node_bytes'] / gib:8.2f} GiB CPU  offload {offload}"
        )
    return lines


def attention_implementation(requested: str) -> str:
    """`auto`: flash_attention_2 when installed and a GPU is there, else sdpa; anything else as given."""
    if requested != "auto":
        return requested
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        return "sdpa"
    return "flash_attention_2" if torch.cuda.is_available() else "sdpa"
