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

from transformers import AutoTokenizer

from llm_recipes.atomic import publish_dir, stop_cleanly_when_disk_full
from llm_recipes.checkpoints import DTYPES, checkpoint_source, load_model
from llm_recipes.config import ConfigError, RecipeParser
from llm_recipes.run_info import write_run_info

logger = logging.getLogger("consolidate")


@dataclass
class ConsolidateArguments:
    checkpoint_dir: str = field(
        metadata={"help": "A checkpoint-N folder, or a run folder (its newest complete checkpoint is used)."}
    )
    output_dir: str = field(metadata={"help": "Folder for the consolidated model (replaced atomically)."})
    dtype: str = field(default="bfloat16", metadata={"help": "Weights dtype.", "choices": list(DTYPES)})


def make_parser() -> RecipeParser:
    return RecipeParser(ConsolidateArguments)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    parser = make_parser()
    (args,) = parser.parse(argv)
    try:
        source = checkpoint_source(Path(args.checkpoint_dir))
        logger.info("consolidating %s", source.path)
        model = load_model(source, DTYPES[args.dtype])
    except ConfigError as e:
        parser.error(str(e))
    model.config.use_cache = True
    with publish_dir(args.output_dir) as staging:
        model.save_pretrained(staging)  # with the checkpoint's generation_config, which load_model kept
        if (Path(source.path) / "tokenizer_config.json").exists():
            AutoTokenizer.from_pretrained(source.path).save_pretrained(staging)
        write_run_info(staging, args, recipe="consolidate")
    logger.info("consolidated model saved to %s", args.output_dir)


if __name__ == "__main__":
    with stop_cleanly_when_disk_full("consolidate.py"):
        main(sys.argv[1:])
