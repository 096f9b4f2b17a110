"""Train the byte-level BPE tokenizer on the corpus and write it as a `transformers` tokenizer folder + report.

    python recipes/train_tokenizer.py --config configs/tokenizer/tiny.yaml [--vocab_size 4096 ...]

Output folder: tokenizer files (loadable with AutoTokenizer.from_pretrained), tokenizer_report.{json,md},
resolved_config.yaml and run_info.json.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, field

from llm_recipes.atomic import publish_dir, stop_cleanly_when_disk_full
from llm_recipes.config import ConfigError, RecipeParser
from llm_recipes.corpus import CorpusArguments, load_corpus
from llm_recipes.run_info import write_run_info
from llm_recipes.tokenizer import min_vocab_size, report_markdown, tokenizer_report, train_bpe, wrap

logger = logging.getLogger("train_tokenizer")


@dataclass
class TokenizerArguments:
    output_dir: str = field(metadata={"help": "Folder for the tokenizer (replaced atomically when it exists)."})
    vocab_size: int = field(default=32000, metadata={"help": "Target vocabulary size, special tokens included."})
    min_frequency: int = field(default=2, metadata={"help": "Merges seen fewer times than this are not learned."})
    model_max_length: int = field(default=4096, metadata={"help": "Longest sequence the model will take."})
    batch_size: int = field(default=1000, metadata={"help": "Documents per batch streamed to the trainer."})


def make_parser() -> RecipeParser:
    return RecipeParser((CorpusArguments, TokenizerArguments))


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    parser = make_parser()
    corpus_args, args = parser.parse(argv)
    if args.vocab_size < min_vocab_size():
        parser.error(f"vocab_size {args.vocab_size} is smaller than the byte alphabet plus special tokens ({min_vocab_size()})")
    try:
        splits, corpus_stats = load_corpus(corpus_args)
    except ConfigError as e:
        parser.error(str(e))

    train = splits["train"]
    logger.info("training a %d-token BPE on %d documents", args.vocab_size, len(train))
    batches = (batch["text"] for batch in train.iter(batch_size=args.batch_size))
    tokenizer = wrap(train_bpe(batches, args.vocab_size, args.min_frequency, length=len(train)), args.model_max_length)

    held_out = splits["validation"] if "validation" in splits else train
    report = tokenizer_report(tokenizer, held_out["text"])
    report["corpus"] = {name: vars(stats) for name, stats in corpus_stats.items()}
    with publish_dir(args.output_dir) as staging:
        tokenizer.save_pretrained(staging)
        (staging / "tokenizer_report.json").write_text(json.dumps(report, indent=2) + "\n")
        (staging / "tokenizer_report.md").write_text(report_markdown(report))
        write_run_info(staging, corpus_args, args, recipe="train_tokenizer")
    print(report_markdown(report))
    logger.info("tokenizer saved to %s", args.output_dir)


if __name__ == "__main__":
    with stop_cleanly_when_disk_full("train_tokenizer.py"):
        main(sys.argv[1:])
