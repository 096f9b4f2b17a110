"""Where a trained model lives, and how to load it whole: a model folder, a (ZeRO) training checkpoint or run folder,
a LoRA adapter + its base, or a Hub id. Shared by consolidate, merge_lora, evaluate and export.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

from llm_recipes.config import ConfigError
from llm_recipes.tokenizer import set_stop_tokens, tokenizer_from
from llm_recipes.training import complete_checkpoints, newest_intact_checkpoint

logger = logging.getLogger(__name__)

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")


@dataclass
class ModelSource:
    """A resolved model location. kind: model (a from_pretrained folder), zero (a ZeRO checkpoint-N), adapter (a peft
    folder; `base` is its base model) or hub (a Hub id, or anything from_pretrained resolves that is not a folder)."""

    kind: str
    path: str
    base: str | None = None

    @property
    def tokenizer_path(self) -> str:
        """Where the tokenizer (and chat template) sits: with the adapter when it was saved there, else the base."""
        if self.kind == "adapter" and not (Path(self.path) / "tokenizer_config.json").is_file():
            return self.base
        return self.path


def _is_model_folder(path: Path) -> bool:
    return (path / "config.json").is_file() and any(any(path.glob(p)) for p in WEIGHT_PATTERNS)


def checkpoint_source(path: Path) -> ModelSource:
    """A checkpoint-N (ZeRO shards, preferred over a 16-bit consolidated copy beside them, or plain weights) or model
    folder as is; a run folder -> its newest intact checkpoint-N."""
    if not ((path / "config.json").is_file() and ((path / "latest").is_file() or _is_model_folder(path))):
        newest = newest_intact_checkpoint(path)
        if newest is None:
            raise ConfigError(f"{path}: neither a checkpoint nor a run folder with a complete checkpoint-N")
        path = newest
    return ModelSource("zero" if (path / "latest").is_file() else "model", str(path))


def adapter_base(adapter_dir: Path, override: str | None = None) -> str:
    config_file = adapter_dir / "adapter_config.json"
    if not config_file.is_file():
        raise ConfigError(f"{adapter_dir}: no adapter_config.json (not a peft adapter folder)")
    base = override or json.loads(config_file.read_text()).get("base_model_name_or_path")
    if not base:
        raise ConfigError(f"{config_file}: no base_model_name_or_path; pass base_model_name_or_path")
    return base


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return 1 <= len(parts) <= 2 and all(parts) and not name.startswith((".", "~")) and not Path(name).suffix


def resolve_source(name: str, base_model_name_or_path: str | None = None) -> ModelSource:
    """Classify `name`, or raise one ConfigError line saying what is wrong with it."""
    path = Path(name)
    if path.is_dir():
        if (path / "adapter_config.json").is_file():
            base = adapter_base(path, base_model_name_or_path)
            if not Path(base).exists() and not _looks_like_hub_id(base):
                raise ConfigError(f"LoRA adapter {path}: its base model {base} does not exist; "
                                  "pass base_model_name_or_path")
            if Path(base).exists() and not _is_model_folder(Path(base)):
                raise ConfigError(f"LoRA adapter {path}: its base {base} is not a model folder (no config.json "
                                  "+ weights)")
            return ModelSource("adapter", str(path), base)
        if (path / "latest").is_file() or _is_model_folder(path) or complete_checkpoints(path):
            return checkpoint_source(path)
        raise ConfigError(f"{path}: not a model (no config.json + weights), a training checkpoint or run folder, "
                          "or a LoRA adapter (adapter_config.json)")
    if path.exists():
        raise ConfigError(f"{path}: a file, not a model folder")
    if not _looks_like_hub_id(name):
        raise ConfigError(f"{name}: no such folder (and not a Hub id)")
    return ModelSource("hub", name)


def load_zero_checkpoint(checkpoint: Path, dtype: torch.dtype) -> torch.nn.Module:
    """DeepSpeed's zero_to_fp32 (fp32 master weights), assigned into a meta model so only the final weights take RAM."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    config = AutoConfig.from_pretrained(checkpoint)
    state_dict = get_fp32_state_dict_from_zero_checkpoint(str(checkpoint))
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    _, unexpected = model.load_state_dict(state_dict, strict=False, assign=True)
    model.tie_weights()
    still_meta = [n for n, p in model.named_parameters() if p.is_meta]
    if still_meta or unexpected:
        raise ConfigError(f"{checkpoint}: weights missing {still_meta} / unexpected {unexpected} in the ZeRO "
                          "checkpoint")
    if (checkpoint / "generation_config.json").is_file():
        model.generation_config = GenerationConfig.from_pretrained(checkpoint)
    return model.to(dtype)


def load_model(source: ModelSource, dtype: torch.dtype = torch.float32, merge: bool = True) -> torch.nn.Module:
    """The model of `source` in `dtype`. An adapter is applied to its base, and folded in when `merge`."""
    try:
        if source.kind == "zero":
            return load_zero_checkpoint(Path(source.path), dtype)
        if source.kind != "adapter":
            return AutoModelForCausalLM.from_pretrained(source.path, dtype=dtype)
        from peft import PeftModel

        base = AutoModelForCausalLM.from_pretrained(source.base, dtype=dtype)
        model = PeftModel.from_pretrained(base, source.path)
    except OSError as e:  # a Hub id offline or unknown, a folder with broken files
        raise ConfigError(f"cannot load {source.path if source.kind != 'adapter' else source.base}: "
                          f"{str(e).splitlines()[0]}") from None
    if (Path(source.path) / "generation_config.json").is_file():  # the chat model's stop tokens (<|im_end|>)
        model.get_base_model().generation_config = GenerationConfig.from_pretrained(source.path)
    return model.merge_and_unload() if merge else model


def load_chat_model(source: ModelSource, tokenizer, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """The model of `source` to answer chats with: in eval mode, an adapter applied to its base and merged. An
    adapter's base keeps its own generation_config, which knows nothing of the chat template the adapter was trained
    with: its stop tokens are set from the adapter's tokenizer, as SFT and export set them."""
    model = load_model(source, dtype, merge=True).eval()
    if source.kind == "adapter":
        set_stop_tokens(model.generation_config, tokenizer)
    return model


def load_tokenizer(source: ModelSource):
    return tokenizer_from(source.tokenizer_path)
