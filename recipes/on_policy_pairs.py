"""On-policy preference pairs, as SPIN does: the reference answer of an instruction is `chosen`, the model's own
greedy answer to the same prompt is `rejected`.

    python recipes/on_policy_pairs.py --config configs/pairs/tiny.yaml --model_name_or_path outputs/tiny/sft

Why: DPO learns to tell two answers apart where the model can read both. Shipped preference sets are written for
large models (answers of 400+ tokens); cut to a small model's context they lose their end-of-turn, and the few that
fit teach nothing that carries to held-out pairs. SPIN (Chen et al., 2024, "Self-Play Fine-Tuning Converts Weak
Language Models to Strong") builds pairs from the SFT data itself: the human answer against what the SFT model says
now. Every pair then fits the length the model was tuned on, and DPO moves the model from its own habits (loops,
answers that trail off) towards the reference.

SFT mixture (llm_recipes/chat_data.py: any SFT format) -> conversations over max_length dropped (counted) -> the
prompt (every turn but the last) through the model's chat template, answered greedily with its generation_config
(its stop tokens) -> pairs.jsonl in TRL's conversational preference format (format `preference` for recipes/dpo.py)
+ pairs_report.json (per source: conversations, too long, answer empty or the same as the reference, pairs, and how
many of the model's answers stopped). Written to a staging folder and renamed into place.
"""

from __future__ import annotations

import json
import logging
import sys
from collections import Counter
from dataclasses import dataclass, field

from transformers import set_seed

from llm_recipes.atomic import publish_dir, stop_cleanly_when_disk_full
from llm_recipes.chat_data import ChatDataArguments, drop_too_long, load_mixture
from llm_recipes.checkpoints import load_chat_model, resolve_source
from llm_recipes.config import ConfigError, RecipeParser
from llm_recipes.evaluation.scoring import generate_answers
from llm_recipes.run_info import write_run_info
from llm_recipes.tokenizer import load_chat_tokenizer

logger = logging.getLogger("on_policy_pairs")


@dataclass
class PairsArguments(ChatDataArguments):
    model_name_or_path: str = field(default="", metadata={"help": "The chat model whose answers are `rejected` (an "
                                                                  "SFT output, merged; or a Hub id)."})
    output_dir: str = field(default="outputs/tiny/pairs", metadata={"help": "Folder for pairs.jsonl and the report."})
    max_length: int = field(
        default=160, metadata={"help": "Conversations longer than this (chat template applied) are dropped, counted; "
                                       "use the SFT run's max_length, so the reference answers are ones it learned "
                                       "to end."})
    max_pairs: int | None = field(default=None, metadata={"help": "Keep at most this many pairs (in mixture order)."})
    max_new_tokens: int = field(default=96, metadata={"help": "Budget of the model's answer."})
    batch_size: int = field(default=32, metadata={"help": "Prompts answered together (left-padded)."})
    seed: int = field(default=42, metadata={"help": "Shuffles the mixture (data_seed of the SFT split rule)."})

    def __post_init__(self):
        super().__post_init__()
        if not self.model_name_or_path:
            raise ConfigError("model_name_or_path is required (the SFT model, e.g. outputs/tiny/sft)")
        for key in ("max_length", "max_new_tokens", "batch_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1, got {getattr(self, key)}")


def make_parser() -> RecipeParser:
    return RecipeParser(PairsArguments)


def build_pairs(args: PairsArguments) -> tuple[list[dict], dict]:
    """The pairs and the report: per source, what became a pair and why the rest did not."""
    source = resolve_source(args.model_name_or_path)
    tokenizer = load_chat_tokenizer(source.tokenizer_path, hint="start from an SFT model")
    data, reports = load_mixture(args, args.seed)
    data = drop_too_long(data, tokenizer, args.max_length, reports)
    rows = [r for split in data.values() for r in split.to_list() if r["messages"][-1]["role"] == "assistant"]
    rows = rows[:args.max_pairs]
    counts = {r.source: Counter(conversations=r.used, too_long=r.too_long) for r in reports}

    set_seed(args.seed)
    model = load_chat_model(source, tokenizer)
    answers = generate_answers(model, tokenizer, [r["messages"][:-1] for r in rows], args.max_new_tokens,
                               args.batch_size)
    pairs = []
    for row, answer in zip(rows, answers):
        c = counts[row["source"]]
        c["answered"] += 1
        c["stopped"] += answer["stopped_at_eos"]
        reference = row["messages"][-1]["content"]
        if not answer["answer"].strip():
            c["empty_answer"] += 1
        elif answer["answer"].strip() == reference.strip():
            c["same_answer"] += 1
        else:
            c["pairs"] += 1
            pairs.append({"prompt": row["messages"][:-1], "chosen": [row["messages"][-1]],
                          "rejected": [{"role": "assistant", "content": answer["answer"]}],
                          "sft_source": row["source"], "sft_record_index": row["record_index"],
                          "rejected_stopped": answer["stopped_at_eos"]})
    keys = ("conversations", "too_long", "answered", "stopped", "empty_answer", "same_answer", "pairs")
    sources = [{"source": name, **{k: c[k] for k in keys}} for name, c in counts.items()]
    return pairs, {"model": args.model_name_or_path, "max_length": args.max_length,
                   "max_new_tokens": args.max_new_tokens, "sources": sources,
                   **{k: sum(s[k] for s in sources) for k in keys}}


def main(argv: list[str] | None = None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    parser = make_parser()
    (args,) = parser.parse(argv)
    try:
        pairs, report = build_pairs(args)
        if not pairs:
            raise ConfigError(f"no pairs: the model gave the reference answer (or none) to all {report['answered']} "
                              "prompts")
        with publish_dir(args.output_dir) as staging:
            (staging / "pairs.jsonl").write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs))
            (staging / "pairs_report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
            write_run_info(staging, args, recipe="on_policy_pairs")
    except (ConfigError, OSError) as e:
        parser.error(str(e))
    logger.info("%d pairs from %d conversations (%d too long, %d answers empty, %d the same as the reference; the "
                "model stopped in %d of %d answers) -> %s/pairs.jsonl", report["pairs"], report["conversations"],
                report["too_long"], report["empty_answer"], report["same_answer"], report["stopped"],
                report["answered"], args.output_dir)
    return report


if __name__ == "__main__":
    with stop_cleanly_when_disk_full("on_policy_pairs.py"):
        main(sys.argv[1:])
