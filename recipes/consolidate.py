"""Turn a training checkpoint (DeepSpeed ZeRO-2/3 shards, or a plain Trainer checkpoint) into one loadable model.

    python recipes/consolidate.py --checkpoint_dir outputs/tiny/pretrain/checkpoint-100 --output_dir outputs/tiny/consolidated
    python recipes/consolidate.py --checkpoint_dir outputs/tiny/pretrain --output_dir ...   # newest complete checkpoint

Output: safetensors weights in `dtype`, config, generation config and tokenizer, loadable with
`LlamaForCausalLM.from_pretrained` / `AutoModelForCausalLM.from_pretrained`. ZeRO shards are merged with DeepSpeed's own
zero_to_fp32 (from the fp32 master weights), on the meta device first so only the final weights take memory.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from llm_recipes.atomic import publish_dir
from llm_recipes.config import RecipeParser
from llm_recipes.run_info import write_run_info
from llm_recipes.training import complete_checkpoints

logger = logging.getLogger("consolidate")
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


@dataclass
class ConsolidateArguments:
    checkpoint_dir: str = field(
        metadata={"help": "A checkpoint-N folder, or a run folder (its newest complete checkpoint is used)."}
    )
    output_dir: str = field(metadata={"help": "Folder for the consolidated model (replaced atomically)."})
    dtype: str = field(default="bfloat16", metadata={"help": "Weights dtype: bfloat16, float16 or float32."})


def make_parser() -> RecipeParser:
    return RecipeParser(ConsolidateArguments)


def find_checkpoint(path: Path) -> Path:
    if (path / "config.json").exists() and ((path / "latest").exists() or any(path.glob("*.safetensors"))):
        return path
    checkpoints = complete_checkpoints(path)
    if not checkpoints:
        raise FileNotFoundError(f"{path}: neither a checkpoint nor a run folder with a complete checkpoint-N")
    return checkpoints[-1]


def load_consolidated(checkpoint: Path, dtype: torch.dtype) -> torch.nn.Module:
    config = AutoConfig.from_pretrained(checkpoint)
    if not (checkpoint / "latest").exists():  # a plain (non-ZeRO) checkpoint already holds whole weights
        return AutoModelForCausalLM.from_pretrained(checkpoint, dtype=dtype)
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    state_dict = get_fp32_state_dict_from_zero_checkpoint(str(checkpoint))
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    missing, unexpected = model.load_state_dict(state_dict, strict=False, assign=True)
    model.tie_weights()
    still_meta = [n for n, p in model.named_parameters() if p.is_meta]
    if still_meta or unexpected:
        raise ValueError(f"{checkpoint}: weights missing {still_meta} / unexpected {unexpected} in the ZeRO checkpoint")
    return model.to(dtype)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    parser = make_parser()
    (args,) = parser.parse(argv)
    if args.dtype not in DTYPES:
        parser.error(f"dtype must be one of {', '.join(DTYPES)}, not {args.dtype!r}")
    try:
        checkpoint = find_checkpoint(Path(args.checkpoint_dir))
    except FileNotFoundError as e:
        parser.error(str(e))
    logger.info("consolidating %s", checkpoint)
    model = load_consolidated(checkpoint, DTYPES[args.dtype])
    model.config.use_cache = True
    with publish_dir(args.output_dir) as staging:
        model.save_pretrained(staging)
        if (checkpoint / "generation_config.json").exists():
            GenerationConfig.from_pretrained(checkpoint).save_pretrained(staging)
        if (checkpoint / "tokenizer_config.json").exists():
            AutoTokenizer.from_pretrained(checkpoint).save_pretrained(staging)
        write_run_info(staging, args, recipe="consolidate")
    logger.info("consolidated model saved to %s", args.output_dir)


if __name__ == "__main__":
    main(sys.argv[1:])
