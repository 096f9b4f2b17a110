"""Measure a causal LM: perplexity and bits per byte per language, zero/k-shot sentiment classification, chat
generation, and lm-evaluation-harness on local task YAMLs.

    python recipes/eval.py --config configs/eval/tiny.yaml
    python recipes/eval.py --config configs/eval/tiny.yaml --model_name_or_path outputs/tiny/sft-lora  # adapter

Any causal LM folder or Hub id (base, SFT, merged LoRA) or a LoRA adapter + its base. Writes eval_results.json,
eval_report.md, generations.jsonl and PNGs (confusion matrices, bits per byte per language) to `output_dir`, staged
beside it and renamed into place.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)  # its CPU import warning: see recipes/sft.py

from transformers import set_seed  # noqa: E402

from llm_recipes.atomic import publish_dir, stop_cleanly_when_disk_full  # noqa: E402
from llm_recipes.checkpoints import DTYPES, load_model, load_tokenizer, resolve_source  # noqa: E402
from llm_recipes.config import ConfigError, RecipeParser, parse_source_list  # noqa: E402
from llm_recipes.evaluation import scoring as ev  # noqa: E402
from llm_recipes.evaluation.data import (ClassificationSet, LMSet, load_labelled, load_lm_texts,  # noqa: E402
                                         load_prompts)
from llm_recipes.evaluation.harness import run_lm_eval  # noqa: E402
from llm_recipes.evaluation.report import write_report  # noqa: E402
from llm_recipes.run_info import write_run_info  # noqa: E402

logger = logging.getLogger("eval")
TASKS = ("lm", "classification", "generation", "lm_eval")
DEFAULT_CONTEXT = 2048  # lm-evaluation-harness's default max_length: a CPU or one GPU scores it at any vocabulary


@dataclass
class EvalArguments:
    model_name_or_path: str = field(metadata={"help": "Model folder, Hub id, training checkpoint or LoRA adapter."})
    output_dir: str = field(metadata={"help": "Where eval_results.json, eval_report.md and the PNGs go."})
    base_model_name_or_path: str | None = field(
        default=None, metadata={"help": "Base of a LoRA adapter; default: the one in its adapter_config.json."})
    dtype: str = field(default="float32", metadata={"help": "Weights dtype.", "choices": list(DTYPES)})
    tasks: list[str] = field(default_factory=lambda: list(TASKS), metadata={"help": f"Which of {TASKS} to run."})
    batch_size: int = field(default=16, metadata={"help": "Sequences per forward pass."})
    seed: int = field(default=42, metadata={"help": "Seed of the demonstration draws and the demo/eval split."})
    context_length: int | None = field(
        default=None, metadata={"help": "Longest input; default: the model's max_position_embeddings, at most 2,048 "
                                        "(lm-evaluation-harness's default; Llama 3.1 allows 131,072)."})
    # language modelling
    lm_sets: list[LMSet] = field(default_factory=list, metadata={"help": "Held-out text: a list of {path, language, "
                                 "name, text_column, sample_by, max_documents}; language keeps documents of that "
                                 "script (en / zh)."})
    stride: int = field(default=512, metadata={"help": "Tokens newly scored per window; = context_length gives "
                                                       "lm-eval's disjoint rolling windows."})
    # classification
    classification_sets: list[ClassificationSet] = field(
        default_factory=list, metadata={"help": "Labelled sets: a list of {path, name, language, text_column, "
                                                "label_column, template, verbalizers, demo_path, demo_pool_size, "
                                                "max_samples}."})
    shots: list[int] = field(default_factory=lambda: [0, 4], metadata={"help": "Demonstrations per prompt."})
    # generation
    prompts_file: str | None = field(
        default=None, metadata={"help": "JSONL {prompt, language} or .txt (one prompt a line) to answer."})
    max_new_tokens: int = field(default=64, metadata={"help": "Generation budget per answer."})
    # lm-evaluation-harness
    lm_eval_tasks: list[str] = field(default_factory=list, metadata={"help": "lm-eval task names."})
    lm_eval_include_path: str = field(
        default="configs/eval/lm_eval", metadata={"help": "Folder of task YAMLs (${VARS} expanded at run time)."})
    lm_eval_limit: int | None = field(default=None, metadata={"help": "Documents per lm-eval task (None: all)."})
    lm_eval_num_fewshot: int | None = field(default=None, metadata={"help": "lm-eval few-shot count."})

    def __post_init__(self):
        self.lm_sets = parse_source_list(self.lm_sets, LMSet, "lm_sets")
        self.classification_sets = parse_source_list(self.classification_sets, ClassificationSet,
                                                     "classification_sets")
        unknown = set(self.tasks) - set(TASKS)
        if unknown:
            raise ConfigError(f"tasks: unknown {sorted(unknown)}; choose from {TASKS}")


def make_parser() -> RecipeParser:
    return RecipeParser(EvalArguments)


def load_inputs(args: EvalArguments) -> dict:
    """Every data file, read and checked before the model loads: a bad file costs seconds, not a model load."""
    return {
        "lm": [load_lm_texts(s) for s in args.lm_sets] if "lm" in args.tasks else [],
        "classification": ([load_labelled(s, args.seed) for s in args.classification_sets]
                           if "classification" in args.tasks else []),
        "prompts": load_prompts(args.prompts_file) if "generation" in args.tasks and args.prompts_file else [],
    }


def evaluate_model(args: EvalArguments) -> dict:
    source = resolve_source(args.model_name_or_path, args.base_model_name_or_path)
    inputs = load_inputs(args)
    set_seed(args.seed)
    tokenizer = load_tokenizer(source)
    model = load_model(source, DTYPES[args.dtype], merge=False).eval()
    context = args.context_length or min(model.config.max_position_embeddings, DEFAULT_CONTEXT)
    prefix = ev.document_prefix_id(tokenizer)
    results = {"model": args.model_name_or_path, "kind": source.kind, "context_length": context,
               "max_position_embeddings": model.config.max_position_embeddings,
               "document_prefix": tokenizer.convert_ids_to_tokens(prefix)}

    if inputs["lm"]:
        results["language_modeling"] = {
            s.name: {"language": s.language, **ev.language_modeling(model, tokenizer, texts, context,
                                                                  min(args.stride, context), args.batch_size, prefix,
                                                                  desc=f"perplexity {s.name}")}
            for s, texts in inputs["lm"]}
    if inputs["classification"]:
        results["classification"] = {}
        for s, data in inputs["classification"]:
            labels = sorted(s.verbalizers)
            per_shot = {}
            for k in args.shots:
                preds, prompts = ev.classify(model, tokenizer, data["texts"], s.template, s.verbalizers,
                                             data["demos"], k, args.seed, context, args.batch_size,
                                             desc=f"{s.name} {k}-shot")
                per_shot[str(k)] = {**ev.classification_scores(preds, data["labels"], labels),
                                    "example_prompt": prompts[0]}
            results["classification"][s.name] = {
                "dataset_name": s.dataset_name or s.name, "language": s.language, "examples": len(data["labels"]),
                "demo_pool": len(data["demos"]), "labels": {str(y): s.verbalizers[y] for y in labels},
                "dropped": data["dropped"], "majority_baseline": ev.majority_baseline(data["labels"], labels),
                "shots": per_shot}
    if inputs["prompts"]:
        rows = ev.generate_answers(model, tokenizer, [p["prompt"] for p in inputs["prompts"]], args.max_new_tokens,
                                   args.batch_size)
        for row, prompt in zip(rows, inputs["prompts"]):
            row["language"] = prompt["language"]
        results["generation"] = ev.generation_summary(rows, args.max_new_tokens)
        results["generation"]["answers"] = rows
    if "lm_eval" in args.tasks and args.lm_eval_tasks:
        del model  # lm-eval loads its own copy
        results["lm_eval"] = run_lm_eval(source, args, context, prefix)
    return results


def main(argv: list[str] | None = None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    parser = make_parser()
    (args,) = parser.parse(argv)
    try:
        results = evaluate_model(args)
    except ConfigError as e:
        parser.error(str(e))
    with publish_dir(args.output_dir) as staging:
        write_report(results, staging)
        write_run_info(staging, args, recipe="eval")
    logger.info("eval results in %s", Path(args.output_dir) / "eval_report.md")
    return results


if __name__ == "__main__":
    with stop_cleanly_when_disk_full("eval.py"):
        main(sys.argv[1:])
