"""Extend a BPE tokenizer with the tokens of a new language (Chinese-LLaMA's first step), every old id unchanged.

    python recipes/extend_tokenizer.py --config configs/tokenizer/extend_zh.yaml [--vocab_size 8000 ...]

A BPE of `vocab_size` is trained on the new corpus with the base tokenizer's own pipeline; its merges that make new
CJK tokens are appended after the base's (llm_recipes/tokenizer.py `extend_bpe`), so every old id and merge stays and
text without CJK characters encodes exactly as before. Byte-level BPE (GPT-2, Llama 3, Qwen, this repo's) and
SentencePiece's BPE with byte fallback (Llama 2, Mistral: the Chinese characters it spells as UTF-8 bytes become
tokens first) are both extended. Output folder: the tokenizer (chat template and special tokens
of the base), extension.json (each new token's id and the base ids it used to split into: the rows its embedding
starts as the mean of), tokenizer_report.{json,md} (chars/token per script on held-out text, before and after),
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
from llm_recipes.tokenizer import check_extensible_bpe, extend_bpe, tokenizer_from, tokenizer_report

logger = logging.getLogger("extend_tokenizer")


@dataclass
class ExtendArguments:
    base_tokenizer_name_or_path: str = field(metadata={"help": "The BPE tokenizer to extend, byte-level or with byte "
                                                               "fallback (folder or Hub id); its ids never change."})
    output_dir: str = field(metadata={"help": "Folder for the extended tokenizer (replaced atomically)."})
    vocab_size: int = field(default=8000, metadata={"help": "Size of the BPE trained on the new corpus; the tokens "
                                                            "it has that the base lacks are added."})
    min_frequency: int = field(default=2, metadata={"help": "Merges seen fewer times than this are not learned."})
    batch_size: int = field(default=1000, metadata={"help": "Documents per batch streamed to the trainer."})


def make_parser() -> RecipeParser:
    return RecipeParser((CorpusArguments, ExtendArguments))


def report_markdown(base: dict, extended: dict, name: str, added: int) -> str:
    lines = ["# Tokenizer extension (validation split)", "",
             f"Base {name}: {base['vocab_size']:,} tokens; extended: {extended['vocab_size']:,} ({added:,} added, ids "
             f"{base['vocab_size']:,} and up).", "",
             "| script | documents | tokens before | tokens after | chars/token before | chars/token after |",
             "|---|---:|---:|---:|---:|---:|"]
    for lang, row in base["by_language"].items():
        new = extended["by_language"][lang]
        lines.append(f"| {lang} | {row['documents']:,} | {row['tokens']:,} | {new['tokens']:,} | "
                     f"{row['chars_per_token']} | {new['chars_per_token']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    parser = make_parser()
    corpus_args, args = parser.parse(argv)
    try:
        base = tokenizer_from(args.base_tokenizer_name_or_path)
        check_extensible_bpe(base, args.base_tokenizer_name_or_path)  # before any corpus is read
        splits, corpus_stats = load_corpus(corpus_args)
        train = splits["train"]
        logger.info("training a %d-token BPE on %d documents to extend %s", args.vocab_size, len(train),
                    args.base_tokenizer_name_or_path)
        batches = (batch["text"] for batch in train.iter(batch_size=args.batch_size))
        extended, added = extend_bpe(base, batches, args.vocab_size, args.min_frequency, len(train),
                                     args.base_tokenizer_name_or_path)
        if not added:
            raise ConfigError(f"the extension corpus adds no token to {args.base_tokenizer_name_or_path}: a "
                              f"{args.vocab_size}-token BPE of it learns no CJK token the base lacks")
    except (ConfigError, OSError) as e:
        parser.error(str(e))

    held_out = splits["validation"] if "validation" in splits else train
    before, after = tokenizer_report(base, held_out["text"]), tokenizer_report(extended, held_out["text"])
    report = {"base": args.base_tokenizer_name_or_path, "added": len(added), "before": before, "after": after,
              "corpus": {name: vars(stats) for name, stats in corpus_stats.items()}}
    markdown = report_markdown(before, after, args.base_tokenizer_name_or_path, len(added))
    with publish_dir(args.output_dir) as staging:
        extended.save_pretrained(staging)
        extension = {"base": args.base_tokenizer_name_or_path, "base_vocab_size": len(base), "added": added}
        (staging / "extension.json").write_text(json.dumps(extension, ensure_ascii=False, indent=1) + "\n")
        (staging / "tokenizer_report.json").write_text(json.dumps(report, indent=2) + "\n")
        (staging / "tokenizer_report.md").write_text(markdown)
        write_run_info(staging, corpus_args, args, recipe="extend_tokenizer")
    print(markdown)
    logger.info("extended tokenizer (%d new tokens) saved to %s", len(added), args.output_dir)


if __name__ == "__main__":
    with stop_cleanly_when_disk_full("extend_tokenizer.py"):
        main(sys.argv[1:])
