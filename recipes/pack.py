"""Tokenize the corpus and pack it into fixed-length blocks that pretraining memory-maps.

    python recipes/pack.py --config configs/pack/tiny.yaml [--block_size 512 ...]

Output folder: the blocks (`output_format: arrow`, the default: a `datasets.DatasetDict` of train and validation saved
with `save_to_disk`, `input_ids` only, no padding; `shards`: index.json + raw uint16 / uint32 shards, 2 bytes a token
for vocabularies up to 65,536, llm_recipes/shards.py), `stats.json` (documents, tokens, blocks, dropped tail tokens,
real-token share, bytes per token; for train sources with `weight`, the documents and tokens each source gave and its
realised token share), resolved_config.yaml and run_info.json. Both formats hold the same blocks in the same order;
pretraining reads either. Re-running on the same input reuses the `datasets` cache.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass, field

import datasets
import numpy as np

from llm_recipes.atomic import publish_dir, stop_cleanly_when_disk_full
from llm_recipes.config import ConfigError, RecipeParser
from llm_recipes.corpus import CorpusArguments, load_corpus
from llm_recipes.executors import ExecutorArguments
from llm_recipes.packing import (count_token, count_tokens, mix_by_weight, pack, split_stats, tokenize,
                                  tokenizer_fingerprint)
from llm_recipes.run_info import write_run_info
from llm_recipes.shards import format_stats, shard_dtype, write_index, write_split
from llm_recipes.sharded_pack import pack_with_executor
from llm_recipes.tokenizer import tokenizer_from

logger = logging.getLogger("pack")


@dataclass
class PackArguments:
    tokenizer_name_or_path: str = field(metadata={"help": "Tokenizer folder (from make tokenizer) or Hub id."})
    output_dir: str = field(metadata={"help": "Folder for the packed dataset (replaced atomically when it exists)."})
    block_size: int = field(default=1024, metadata={"help": "Tokens per block: the training sequence length."})
    num_proc: int | None = field(default=None, metadata={"help": "Worker processes for map; default: all cores."})
    tokenize_batch_size: int = field(default=1000, metadata={"help": "Documents per tokenizer call."})
    pack_batch_size: int = field(
        default=1000,
        metadata={"help": "Documents concatenated per packing group; each group's tail (< block_size) is dropped."},
    )
    output_format: str = field(default="arrow", metadata={
        "help": "arrow (a datasets.DatasetDict, int32) or shards (index.json + memory-mapped uint16 / uint32 files).",
        "choices": ["arrow", "shards"]})
    shard_blocks: int = field(default=2**20, metadata={"help": "Blocks per shard file with output_format shards."})


@dataclass
class PackExecutorArguments(ExecutorArguments):  # tasks, workers, ray_* and slurm_* as in make data
    executor: str = field(default="datasets", metadata={
        "help": "datasets: datasets.map on this machine (small corpora, a random validation split); local, ray or "
                "slurm: datatrove tasks, one uint16 / uint32 shard per input file, weights mixing whole blocks "
                "(llm_recipes/sharded_pack.py).",
        "choices": ["datasets", "local", "ray", "slurm"]})
    work_dir: str | None = field(default=None, metadata={
        "help": "executor local / ray / slurm: shards and task markers kept for a rerun (default <output_dir>_work)."})


def make_parser() -> RecipeParser:
    return RecipeParser((CorpusArguments, PackArguments, PackExecutorArguments))


def main(argv: list[str] | None = None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    parser = make_parser()
    corpus_args, args, ex = parser.parse(argv)
    if args.block_size < 2:
        parser.error(f"block_size must be at least 2, got {args.block_size}")
    num_proc = args.num_proc or os.cpu_count() or 1
    try:
        ex.check_executor()
        tokenizer = tokenizer_from(args.tokenizer_name_or_path)
        if tokenizer.eos_token_id is None:
            raise ConfigError(f"tokenizer {args.tokenizer_name_or_path} has no eos_token: documents could not be "
                              "separated")
        tokenizer_info = {"name_or_path": args.tokenizer_name_or_path, "vocab_size": len(tokenizer),
                          "eos_token_id": tokenizer.eos_token_id, "sha256": tokenizer_fingerprint(tokenizer)}
        if ex.executor != "datasets":
            summary = pack_with_executor(corpus_args, args, ex, tokenizer, tokenizer_info)
            if summary is None:
                logger.info("submitted to Slurm: the pack's job array, then its index job, into %s", args.output_dir)
            else:
                log_summary(summary["splits"], args)
            return summary
        splits, corpus_stats = load_corpus(corpus_args)
    except (ConfigError, OSError) as e:
        parser.error(str(e))

    packed, stats = {}, {}
    for name, docs in splits.items():
        tokens = tokenize(docs, tokenizer, args.tokenize_batch_size, num_proc, desc=name)
        mixture = None
        if name == "train" and corpus_args.weighted:  # sample the documents to the weights, then pack
            rows, mixture = mix_by_weight(tokens, docs["source"], [s.weight for s in corpus_args.train_sources],
                                          corpus_args.seed)
            for entry in mixture:
                entry["source"] = corpus_args.train_sources[entry["source"]].path
            tokens = tokens.select(rows).flatten_indices()  # count_tokens reads the Arrow table itself
        blocks = pack(tokens, args.block_size, args.pack_batch_size, num_proc, desc=name)
        n_tokens = count_tokens(tokens)
        n_blocks = len(blocks)
        pads = count_token(blocks, tokenizer.pad_token_id) if tokenizer.pad_token_id is not None else 0
        stats[name] = {
            **split_stats(corpus_stats[name].documents, corpus_stats[name].empty_documents_skipped, n_tokens, n_blocks,
                          args.block_size, pads),
            "fingerprint": blocks._fingerprint,
            **({"mixture": mixture} if mixture else {}),
        }
        if n_blocks == 0:
            logger.warning("split %s has %d tokens: fewer than one %d-token block", name, n_tokens, args.block_size)
        packed[name] = blocks

    summary = {"splits": stats, "tokenizer": tokenizer_info}
    dtype = shard_dtype(len(tokenizer)) if args.output_format == "shards" else np.dtype("<i4")
    summary["format"] = format_stats(args.output_format, dtype)
    with publish_dir(args.output_dir) as staging:
        if args.output_format == "shards":
            write_index(staging, dtype, args.block_size, tokenizer_info,
                        {name: write_split(blocks, staging, name, dtype, args.shard_blocks)
                         for name, blocks in packed.items()})
        else:
            datasets.DatasetDict(packed).save_to_disk(str(staging))
        (staging / "stats.json").write_text(json.dumps(summary, indent=2) + "\n")
        write_run_info(staging, corpus_args, args, ex, recipe="pack")
    log_summary(stats, args)
    return summary


def log_summary(stats: dict, args: PackArguments) -> None:
    for name, s in stats.items():
        logger.info(
            "%s: %d documents (%d empty skipped) -> %d tokens -> %d blocks of %d, %d tail tokens dropped",
            name, s["documents"], s["empty_documents_skipped"], s["tokens"], s.get("blocks_packed", s["blocks"]),
            args.block_size, s["dropped_tail_tokens"],
        )
        for m in s.get("mixture", []):
            logger.info("  %s: weight %g -> %d tokens, share %.4f", m["source"], m["weight"], m["tokens"], m["share"])
    logger.info("packed dataset saved to %s", args.output_dir)


if __name__ == "__main__":
    with stop_cleanly_when_disk_full("pack.py"):
        main(sys.argv[1:])
