"""Tokens/s of our tokenize + pack (datasets.map, Arrow output) vs the raw `tokenizers` encoder, same text, same cores.

    python benchmarks/tokenize_pack.py --tokenizer outputs/tiny/tokenizer --config configs/pack/tiny.yaml

The baseline is the like-for-like one: `Tokenizer.encode_batch_fast` (what our map step calls: no offsets) on batches
of the same size, which already uses every core (rayon); ours runs `num_proc` = the same core count. `encode_batch`
(with offsets, slower) is printed for context. Both run in this one process, alternating, `--rounds` times: the
headline is the median of the per-round ratios, with their spread.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

import datasets
from tokenizers import Tokenizer
from transformers import AutoTokenizer

from llm_recipes.config import RecipeParser
from llm_recipes.corpus import CorpusArguments, load_corpus
from llm_recipes.packing import count_tokens, pack, tokenize


_RAW: dict = {}  # the baseline process's tokenizer and text, loaded once


def raw_setup(tokenizer_file: str, texts: list[str]) -> None:
    _RAW.update(tok=Tokenizer.from_file(tokenizer_file), texts=texts)


def raw_encode(batch_size: int, fast: bool = False) -> tuple[int, float]:
    """Tokens and seconds of the raw encoder over the text, in the baseline process."""
    tok, texts = _RAW["tok"], _RAW["texts"]
    encode = tok.encode_batch_fast if fast else tok.encode_batch  # _fast skips offsets: what our map step calls
    n, start_time = 0, time.perf_counter()
    for start in range(0, len(texts), batch_size):
        n += sum(len(e.ids) for e in encode(texts[start : start + batch_size], add_special_tokens=False))
    return n, time.perf_counter() - start_time


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
    cli.add_argument("--rounds", type=int, default=5)
    cli.add_argument("--block_size", type=int, default=1024)
    cli.add_argument("--batch_size", type=int, default=1000)
    cli.add_argument("--num_proc", type=int, default=os.cpu_count())
    cli.add_argument("--tiny", action="store_true", help="seconds: 2,000 documents, 2 rounds (the tests)")
    args = cli.parse_args()
    if args.tiny:
        args.repeat, args.rounds = 1, 2

    (corpus_args,) = RecipeParser(CorpusArguments).parse_args_and_config(
        ["--config", args.config], return_remaining_strings=True
    )[:1]
    splits, _ = load_corpus(corpus_args)
    texts = list(splits["train"]["text"])[:2000 if args.tiny else None] * args.repeat
    workdir = tempfile.TemporaryDirectory()
    # the source on disk, memory-mapped, as load_corpus gives it to the pack recipe
    ds = datasets.Dataset.from_dict({"text": texts}).flatten_indices(cache_file_name=f"{workdir.name}/src.arrow")
    datasets.disable_caching()
    # The baseline runs in its own (spawned, never forked) process: once this process forks for datasets.map, the
    # tokenizers library turns its own thread pool off here, and encode_batch would run on one core from round 2 on.
    baseline = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=raw_setup,
                                   initargs=(os.path.join(args.tokenizer, "tokenizer.json"), texts))
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    datasets.disable_progress_bars()

    rounds = []  # seconds of (encode_batch, encode_batch_fast, ours) per round
    for _ in range(args.rounds):
        n_raw, raw_s = baseline.submit(raw_encode, args.batch_size).result()
        _, fast_s = baseline.submit(raw_encode, args.batch_size, True).result()
        t0 = time.perf_counter()
        n_ours = ours(tokenizer, ds, args.block_size, args.batch_size, args.num_proc)
        rounds.append((raw_s, fast_s, time.perf_counter() - t0))
    baseline.shutdown()
    assert n_ours == n_raw + len(texts), "ours must encode the same text (plus one EOS per document)"

    def tps(i: int) -> float:
        return n_raw / statistics.median(r[i] for r in rounds)

    vs_fast = sorted(r[1] / r[2] for r in rounds)  # per round: our tokens/s over encode_batch_fast's
    vs_raw = sorted(r[0] / r[2] for r in rounds)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}")
    print(f"text: {len(texts):,} documents, {n_raw:,} tokens; batch {args.batch_size}, num_proc {args.num_proc}; "
          f"{args.rounds} alternating rounds, medians")
    print(f"raw encode_batch_fast (baseline): {tps(1):,.0f} tokens/s")
    print(f"raw encode_batch (with offsets):  {tps(0):,.0f} tokens/s")
    print(f"ours tokenize+pack (Arrow):       {tps(2):,.0f} tokens/s")
    print(f"ratio ours/encode_batch_fast: {statistics.median(vs_fast):.2f}x (spread {vs_fast[0]:.2f}-{vs_fast[-1]:.2f}, "
          f"target >= 0.80x); for context ours/encode_batch: {statistics.median(vs_raw):.2f}x")

if __name__ == "__main__":
    main()
