"""Turn a training output into a Hub-ready folder that other programs open: transformers 5 and 4.x, vLLM, llama.cpp.

    python recipes/export.py --config configs/export/tiny.yaml
    python recipes/export.py --config configs/export/tiny.yaml --model_name_or_path outputs/tiny/sft-lora --gguf true

Source: a model folder, a ZeRO checkpoint-N (or a run folder: its newest complete checkpoint), or a LoRA adapter +
its base (merged by default). Output, written beside `output_dir` and renamed into place: safetensors shards
(`max_shard_size`), config.json with a top-level rope_theta, generation_config.json stopping at </s> and <|im_end|>,
tokenizer files with the chat template (also inside tokenizer_config.json), special_tokens_map.json, README.md (model
card with the eval results and model-index), training_recipe/ (the resolved YAML of every stage) and, with `gguf`,
a llama.cpp GGUF file. No local absolute path and no token is ever written: the export checks before it publishes.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)  # its CPU import warning: see recipes/sft.py

from huggingface_hub.utils import HFValidationError, validate_repo_id  # noqa: E402

from llm_recipes.atomic import publish_dir, stop_cleanly_when_disk_full  # noqa: E402
from llm_recipes.checkpoints import DTYPES, load_model, load_tokenizer, resolve_source  # noqa: E402
from llm_recipes.config import ConfigError, RecipeParser  # noqa: E402
from llm_recipes.hub.folder import (build_model_card, card_metadata, check_no_leaks,  # noqa: E402
                                    make_transformers4_readable, recipe_lineage, redact_paths, write_recipe_files)
from llm_recipes.hub.gguf import convert_to_gguf  # noqa: E402
from llm_recipes.run_info import git_state, package_versions, resolved_config  # noqa: E402
from llm_recipes.tokenizer import set_stop_tokens, stop_names  # noqa: E402

logger = logging.getLogger("export")
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "generation_config.json")


@dataclass
class ExportArguments:
    model_name_or_path: str = field(metadata={"help": "What to export: a model folder, a (ZeRO) checkpoint-N or run "
                                                      "folder, or a LoRA adapter folder."})
    output_dir: str = field(metadata={"help": "The Hub-ready folder (written beside it, then renamed into place)."})
    repo_id: str = field(metadata={"help": "The Hub repo this folder is meant for (user/name): card title and "
                                           "loading example. make push may push it elsewhere."})
    base_model_name_or_path: str | None = field(
        default=None, metadata={"help": "Base of a LoRA adapter; default: the one in its adapter_config.json."})
    merge_lora: bool = field(default=True, metadata={"help": "Fold a LoRA adapter into its base (a full model that "
                                                             "every program loads); false exports the adapter."})
    dtype: str = field(default="bfloat16", metadata={"help": "Weights dtype.", "choices": list(DTYPES)})
    max_shard_size: str = field(default="5GB", metadata={"help": "Largest safetensors shard, e.g. 5GB, 500MB."})
    eval_results: str | None = field(
        default=None, metadata={"help": "eval_results.json of make eval, for the card's metrics and model-index."})
    license: str | None = field(
        default=None, metadata={"help": "Hub licence id of the model (mind the data's); default: the base model's, "
                                        "from its card in a local folder, else 'other'."})
    languages: list[str] = field(default_factory=list, metadata={"help": "ISO 639-1 codes for the card; default: "
                                                                         "the languages eval_results measured."})
    datasets: list[str] = field(default_factory=list, metadata={"help": "Hub ids of the training data, for the card."})
    base_model: str | None = field(
        default=None, metadata={"help": "Hub id of the model this one was trained from (card; an exported adapter's "
                                        "base); default: the model the run started from, followed back through "
                                        "its stages (a local folder: its name), none for a run from scratch."})
    tags: list[str] = field(default_factory=list, metadata={"help": "Card tags besides those of the run (llm-recipes, "
                                                                    "the architecture, chatml, from-scratch)."})
    summary: str = field(default="", metadata={"help": "One paragraph for the card: what the model is."})
    limitations: str = field(default="", metadata={"help": "What the model cannot do, for the card."})
    gguf: bool = field(default=False, metadata={"help": "Also write a GGUF file with llama.cpp's converter."})
    llama_cpp_dir: str | None = field(
        default=None, metadata={"help": "llama.cpp checkout (with convert_hf_to_gguf.py); default: $LLAMA_CPP_DIR."})
    gguf_outtype: str = field(default="f16", metadata={"help": "GGUF weight type.",
                                                       "choices": ["f32", "f16", "bf16", "q8_0"]})


def make_parser() -> RecipeParser:
    return RecipeParser(ExportArguments)


def check(args: ExportArguments) -> None:
    try:
        validate_repo_id(args.repo_id)
        if args.base_model:
            validate_repo_id(args.base_model)
    except HFValidationError as e:
        raise ConfigError(f"invalid Hub id: {str(e).splitlines()[0]}") from None
    if args.eval_results and not Path(args.eval_results).is_file():
        raise ConfigError(f"eval_results: {args.eval_results} does not exist (run make eval first, or unset it)")


def write_adapter(source, args: ExportArguments, staging: Path) -> None:
    """An unmerged adapter: its files, with the base named by Hub id (a local path would not resolve for others)."""
    base = args.base_model or (source.base if not Path(source.base).exists() else None)
    if base is None:
        raise ConfigError(f"exporting the adapter {source.path} unmerged needs base_model: the Hub id of its base "
                          f"(it names the local folder {Path(source.base).name})")
    for name in ADAPTER_FILES:
        if (Path(source.path) / name).is_file():
            shutil.copy2(Path(source.path) / name, staging / name)
    config = json.loads((staging / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = base
    (staging / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")


def export(args: ExportArguments) -> Path:
    check(args)
    source = resolve_source(args.model_name_or_path, args.base_model_name_or_path)
    logger.info("exporting %s (%s)", source.path, source.kind)
    tokenizer = load_tokenizer(source)
    results = json.loads(Path(args.eval_results).read_text()) if args.eval_results else None
    shown = redact_paths(results)  # the results as the card and the folder carry them
    if results and Path(results.get("model", "")).resolve() != Path(args.model_name_or_path).resolve():
        logger.warning("eval_results %s measured %s, not %s", args.eval_results, results.get("model"),
                       args.model_name_or_path)
    adapter_only = source.kind == "adapter" and not args.merge_lora
    model = None if adapter_only else load_model(source, DTYPES[args.dtype], merge=True)
    with publish_dir(args.output_dir) as staging:
        if adapter_only:
            write_adapter(source, args, staging)
        else:
            model.config.use_cache = True  # trained without a KV cache; inference wants it
            model.generation_config.use_cache = True
            if tokenizer.chat_template:  # a base model without one keeps its own stop tokens
                set_stop_tokens(model.generation_config, tokenizer)
            else:
                model.generation_config.pad_token_id = tokenizer.pad_token_id
            model.save_pretrained(staging, max_shard_size=args.max_shard_size)
        tokenizer.save_pretrained(staging)
        make_transformers4_readable(staging)
        lineage = recipe_lineage(args.model_name_or_path)
        lineage.insert(0, ("export", resolved_config(args)))
        recipes = write_recipe_files(lineage, staging)
        versions = {"git": git_state(), "packages": package_versions()}
        (staging / "training_recipe" / "versions.json").write_text(json.dumps(versions, indent=2) + "\n")
        gguf_file = None
        if args.gguf and not adapter_only:
            gguf_file = convert_to_gguf(staging, args.llama_cpp_dir, args.gguf_outtype).name
        about = card_metadata(args.model_name_or_path, license=args.license, languages=args.languages,
                              tags=args.tags, base_model=args.base_model, chat_template=tokenizer.chat_template,
                              model_type=json.loads((staging / "config.json").read_text())["model_type"]
                              if (staging / "config.json").is_file() else None, eval_results=results)
        card = build_model_card(
            model_name=args.repo_id.split("/")[-1], repo_id=args.repo_id, datasets=args.datasets, **about,
            summary=args.summary, limitations=args.limitations, eval_results=shown, recipes=recipes,
            gguf_file=gguf_file, stop_tokens=[] if model is None else stop_names(model.generation_config, tokenizer),
        )
        card.save(staging / "README.md")
        if results:  # the card's numbers in full, local paths rewritten
            (staging / "eval_results.json").write_text(json.dumps(shown, indent=2, ensure_ascii=False) + "\n")
        check_no_leaks(staging, [args.model_name_or_path, args.output_dir])
    return Path(args.output_dir)


def main(argv: list[str] | None = None) -> Path:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    parser = make_parser()
    (args,) = parser.parse(argv)
    try:
        out = export(args)
    except ConfigError as e:
        parser.error(str(e))
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    logger.info("Hub-ready folder %s: %s", out, ", ".join(files))
    return out


if __name__ == "__main__":
    with stop_cleanly_when_disk_full("export.py"):
        main(sys.argv[1:])
