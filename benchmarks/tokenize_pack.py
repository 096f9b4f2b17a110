"""Tokens/s of our tokenize + pack (datasets.map, Arrow output) vs the raw `tokenizers` encoder, same text, same cores.

    python benchmarks/tokenize_pack.py --tokenizer outputs/tiny/tokenizer --config configs/pack/tiny.yaml

The baseline is `Tokenizer.encode_batch` on batches of the same size, which already uses every core (rayon); ours
runs `num_proc` = the same core count. Both run in this one process, alternating, best of `--rounds`.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

import datasets
from tokenizers import Tokenizer
from transformers import AutoTokenizer

from llm_recipes.config import RecipeParser
from llm_recipes.corpus import CorpusArguments, load_corpus
from llm_recipes.packing import count_tokens, pack, tokenize


def raw_encode(tok: Tokenizer, texts: list[str], batch_size: int, fast: bool = False) -> int:
    encode = tok.encode_batch_fast if fast else tok.encode_batch  # _fast skips offsets: what our map step calls
    n = 0
    for start in range(0, len(texts), batch_size):
        n += sum(len(e.ids) for e in encode(texts[start : start + batch_size], add_special_tokens=False))
    return n


def ours(tokenizer, ds: datasets.Dataset, block_size: int, batch_size: int, num_proc: int) -> int:
    # caching is disabled (main): every round does the work and writes its Arrow files, no cache hit
    tokens = tokenize(ds, tokenizer, batch_size, num_proc, desc="bench")
    pack(tokens, block_size, batch_size, num_proc, desc="bench")
    return count_tokens(tokens)


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("--tokenizer", default="outputs/tiny/tokenizer")
    cli.add_argument("--config", default="configs/pack/tiny.yaml", help="a pack recipe: its train_sources are the text")
    cli.add_argument("--repeat", type=int, default=3, help="repeat the corpus this many times (more work to time)")
    cli.add_argument("--rounds", type=int, default=3)
    cli.add_argument("--block_size", type=int, default=1024)
    cli.add_argument("--batch_size", type=int, default=1000)
    cli.add_argument("--num_proc", type=int, default=os.cpu_count())
    args = cli.parse_args()

    (corpus_args,) = RecipeParser(CorpusArguments).parse_args_and_config(
        ["--config", args.config], return_remaining_strings=True
    )[:1]
    splits, _ = load_corpus(corpus_args)
    texts = list(splits["train"]["text"]) * args.repeat
    workdir = tempfile.TemporaryDirectory()
    # the source on disk, memory-mapped, as load_corpus gives it to the pack recipe
    ds = datasets.Dataset.from_dict({"text": texts}).flatten_indices(cache_file_name=f"{workdir.name}/src.arrow")
    datasets.disable_caching()
    raw = Tokenizer.from_file(os.path.join(args.tokenizer, "tokenizer.json"))
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    datasets.disable_progress_bars()

    best_raw = best_fast = best_ours = float("inf")
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        n_raw = raw_encode(raw, texts, args.batch_size)
        best_raw = min(best_raw, time.perf_counter() - t0)
        t0 = time.perf_counter()
        raw_encode(raw, texts, args.batch_size, fast=True)
        best_fast = min(best_fast, time.perf_counter() - t0)
        t0 = time.perf_counter()
        n_ours = ours(tokenizer, ds, args.block_size, args.batch_size, args.num_proc)
        best_ours = min(best_ours, time.perf_counter() - t0)
    assert n_ours == n_raw + len(texts), "ours must encode the same text (plus one EOS per document)"

    raw_tps, fast_tps, ours_tps = n_raw / best_raw, n_raw / best_fast, n_raw / best_ours
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}")
    print(f"text: {len(texts):,} documents, {n_raw:,} tokens; batch {args.batch_size}, num_proc {args.num_proc}")
    print(f"raw tokenizers encode_batch: {raw_tps:,.0f} tokens/s")
    print(f"raw encode_batch_fast:       {fast_tps:,.0f} tokens/s")
    print(f"ours tokenize+pack (Arrow):  {ours_tps:,.0f} tokens/s")
    print(f"ratio ours/encode_batch: {ours_tps / raw_tps:.2f}x (target >= 0.80x); ours/encode_batch_fast: "
          f"{ours_tps / fast_tps:.2f}x")


if __name__ == "__main__":
    main()
