"""Merge a LoRA adapter (a peft folder, e.g. from recipes/sft.py with use_peft: true) into a full checkpoint.

    python recipes/merge_lora.py --adapter_dir outputs/tiny/sft-lora --output_dir outputs/tiny/sft-lora-merged

Loads the base model named in adapter_config.json (or --base_model_name_or_path), applies the adapter, folds it into
the weights (peft `merge_and_unload`) and saves a plain transformers folder: safetensors, config, generation config
and the tokenizer saved with the adapter (chat template included). The folder is written to a staging folder and
renamed into place. Merged and adapter logits agree to float reassociation (~1e-5 in fp32).
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)  # its CPU import warning: see recipes/sft.py

from llm_recipes.atomic import publish_dir, stop_cleanly_when_disk_full  # noqa: E402
from llm_recipes.checkpoints import DTYPES, ModelSource, adapter_base, load_model, load_tokenizer  # noqa: E402
from llm_recipes.config import ConfigError, RecipeParser  # noqa: E402
from llm_recipes.run_info import write_run_info  # noqa: E402

logger = logging.getLogger("merge_lora")


@dataclass
class MergeArguments:
    adapter_dir: str = field(
        metadata={"help": "peft adapter folder (adapter_config.json + adapter_model.safetensors)."}
    )
    output_dir: str = field(metadata={"help": "Folder for the merged model (replaced atomically when it exists)."})
    base_model_name_or_path: str | None = field(
        default=None, metadata={"help": "Base model folder or Hub id; default: base_model_name_or_path of the adapter."}
    )
    dtype: str = field(
        default="float32",
        metadata={"help": "dtype to merge and save in.", "choices": list(DTYPES)},
    )


def make_parser() -> RecipeParser:
    return RecipeParser(MergeArguments)


def merge(args: MergeArguments) -> Path:
    adapter_dir = Path(args.adapter_dir)
    source = ModelSource("adapter", str(adapter_dir), adapter_base(adapter_dir, args.base_model_name_or_path))
    merged = load_model(source, DTYPES[args.dtype], merge=True)
    tokenizer = load_tokenizer(source)
    with publish_dir(args.output_dir) as staging:
        merged.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        write_run_info(staging, args, recipe="merge_lora")
    return Path(args.output_dir)


def main(argv: list[str] | None = None) -> Path:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    parser = make_parser()
    (args,) = parser.parse(argv)
    try:
        out = merge(args)
    except (ConfigError, OSError) as e:
        parser.error(str(e))
    logger.info("merged model saved to %s", out)
    return out


if __name__ == "__main__":
    with stop_cleanly_when_disk_full("merge_lora.py"):
        main(sys.argv[1:])
