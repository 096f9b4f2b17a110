"""How `make pack` on datatrove's executors grows with the corpus, and how fast it is next to datatrove's own tokenizer.

    .venv/bin/python benchmarks/pack_scale.py                 # ~4 min on 2 cores (downloads linux-doc-6.1 once)
    .venv/bin/python benchmarks/pack_scale.py --tiny          # seconds: the test suite runs this

Corpus: data_prep_scale.py's (the shipped text plus the Linux kernel's documentation, at least 25 M characters; scale k
adds k-1 renamed copies), as JSONL files, 4 per copy. Tokenizer: Llama 2's 32,000-token SentencePiece vocabulary
(../shared/models/llama2-spm: uint16 shards) unless --tokenizer names another folder.
1. Scale: `recipes/pack.py --executor local --tasks 4 --workers 2` at 1x, 4x and 16x: wall time, tokens/s per core,
   the peak RSS of the largest task process (sampled every 50 ms) and disk bytes per packed token (shards + index +
   stats). Goals: RSS flat within 1.5x, wall within 1.2x of linear.
2. Ray with 2 workers vs 1 on the 1x corpus (a Ray of its own with 2 CPUs; a first, untimed run warms both).
3. Ours vs datatrove's `DocumentTokenizer` (JsonlReader -> DocumentTokenizer, no shuffling, EOS appended) on the same
   1x files, the same LocalPipelineExecutor (4 tasks, 2 workers): tokens/s, the median of 5 alternating rounds after an
   untimed one. Ours also packs into blocks; theirs also writes a document index. Goal: >= 1.0x.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

from data_prep_bench import REPO, kernel_docs, shipped_texts
from data_prep_scale import write_corpus

sys.path.insert(0, str(REPO))  # the recipes are modules of the repo root, not of the installed package
TASKS, WORKERS = 4, 2


def pack_args(corpus: Path, out: Path, tokenizer: str, executor: str, workers: int = WORKERS) -> list[str]:
    return ["--train_sources", str(corpus), "--validation_split_size", "0", "--tokenizer_name_or_path", tokenizer,
            "--output_dir", str(out), "--block_size", "2048", "--executor", executor, "--tasks", str(TASKS),
            "--workers", str(workers)]


def run_pack(corpus: Path, out: Path, tokenizer: str) -> dict:
    """One pack, as `make pack` runs it: seconds, the peak RSS of its largest task process (sampled every 50 ms), tokens,
    bytes on disk per packed token."""
    import threading

    import psutil

    peak, done = [0], threading.Event()

    def sample():
        while not done.is_set():
            # Only the fork server's children, the processes that run the tasks: datatrove's multiprocess.Manager is
            # a fork of this process (its RSS is this process's pages, shared, growing with the corpus built here).
            for child in psutil.Process().children(recursive=True):
                try:
                    if "forkserver" in " ".join(psutil.Process(child.ppid()).cmdline()):
                        peak[0] = max(peak[0], child.memory_info().rss)
                except psutil.Error:
                    pass  # a task that just ended
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        seconds = timed_pack_in_process(corpus, out, tokenizer, "local")
    finally:
        done.set()
        sampler.join()
    stats = json.loads((out / "stats.json").read_text())
    tokens, packed = stats["splits"]["train"]["tokens"], stats["splits"]["train"]["packed_tokens"]
    disk = sum(p.stat().st_size for p in out.rglob("*") if p.is_file() and p.suffix in (".bin", ".json"))
    return {"seconds": seconds, "peak_rss_mib": peak[0] / 2**20, "tokens": tokens,
            "tokens_s_core": tokens / seconds / WORKERS, "bytes_per_token": disk / packed,  # per token in a block
            "dtype": stats["format"]["dtype"]}


def timed_pack_in_process(corpus: Path, out: Path, tokenizer: str, executor: str, workers: int = WORKERS) -> float:
    import recipes.pack

    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(f"{out}_work", ignore_errors=True)
    start = time.perf_counter()
    recipes.pack.main(pack_args(corpus, out, tokenizer, executor, workers))
    return time.perf_counter() - start


def timed_datatrove(corpus: Path, out: Path, tokenizer: str, eos: str) -> float:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.tokens import DocumentTokenizer

    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    LocalPipelineExecutor([JsonlReader(str(corpus), glob_pattern="*.jsonl"),
                           DocumentTokenizer(str(out / "tokens"), str(Path(tokenizer) / "tokenizer.json"),
                                             eos_token=eos, shuffle_documents=False)],
                          tasks=TASKS, workers=WORKERS, logging_dir=str(out / "logs")).run()
    return time.perf_counter() - start


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("--tokenizer", default=str(REPO.parent / "shared" / "models" / "llama2-spm"))
    cli.add_argument("--scales", type=int, nargs="+", default=[1, 4, 16])
    cli.add_argument("--rounds", type=int, default=5)
    cli.add_argument("--ray_runs", type=int, default=3)
    cli.add_argument("--work_dir", default=str(REPO / "outputs" / "bench" / "pack_scale"))
    cli.add_argument("--tiny", action="store_true", help="seconds: 200 shipped documents, scales 1 and 2, 1 round, "
                                                          "no Ray")
    args = cli.parse_args()
    from transformers import AutoTokenizer

    eos = AutoTokenizer.from_pretrained(args.tokenizer).eos_token
    work = Path(args.work_dir)
    if args.tiny:
        base = [t for t in shipped_texts() if len(t) > 500][:200]
        args.scales, args.rounds, args.ray_runs = [1, 2], 1, 0
    else:
        base = shipped_texts() + kernel_docs(REPO / "outputs" / "bench" / "data_prep")
    print(f"base corpus: {len(base):,} documents, {sum(map(len, base)) / 1e6:.1f} M characters; tokenizer "
          f"{args.tokenizer}; {platform.machine()}, {os.cpu_count()} cores; {TASKS} tasks on {WORKERS} workers")
    results = {"scales": {}}
    for scale in args.scales:
        corpus = work / f"corpus_{scale}x"
        shutil.rmtree(corpus, ignore_errors=True)
        write_corpus(base, scale, corpus, files_per_copy=4)
        (corpus / "planted.jsonl").unlink()  # data_prep_scale's near-copies: dedup's test, not packing's
        if scale == args.scales[0] and not args.tiny:  # untimed: starts the fork server every later run reuses
            run_pack(corpus, work / f"packed_{scale}x", args.tokenizer)
        row = results["scales"][scale] = run_pack(corpus, work / f"packed_{scale}x", args.tokenizer)
        print(f"{scale:>3}x: {row['tokens'] / 1e6:.1f} M tokens in {row['seconds']:.1f} s = "
              f"{row['tokens_s_core'] / 1e3:.0f} k tokens/s per core; peak RSS {row['peak_rss_mib']:.0f} MiB; "
              f"{row['bytes_per_token']:.4f} bytes/token on disk ({row['dtype']})")
    first, last = results["scales"][min(args.scales)], results["scales"][max(args.scales)]
    growth = last["tokens"] / first["tokens"]
    wall, rss = last["seconds"] / first["seconds"] / growth, last["peak_rss_mib"] / first["peak_rss_mib"]
    print(f"{min(args.scales)}x -> {max(args.scales)}x ({growth:.1f}x the tokens): wall {wall:.2f} of linear (goal <= "
          f"1.2), peak RSS {rss:.2f}x (goal <= 1.5)")

    corpus = work / f"corpus_{min(args.scales)}x"
    if args.ray_runs:
        import ray

        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        times = {1: [], 2: []}
        try:
            for run in range(args.ray_runs + 1):  # run 0 warms both pools
                for workers in (1, 2):
                    seconds = timed_pack_in_process(corpus, work / "ray", args.tokenizer, "ray", workers)
                    if run:
                        times[workers].append(seconds)
        finally:
            ray.shutdown()
        speedups = [a / b for a, b in zip(times[1], times[2])]
        results["ray"] = {"w1_s": times[1], "w2_s": times[2], "speedups": speedups}
        print(f"ray: 2 workers vs 1: median {statistics.median(speedups):.2f}x ({min(speedups):.2f}-"
              f"{max(speedups):.2f}, {len(speedups)} runs)")

    ratios, warm = [], 0 if args.tiny else 1
    for round_ in range(warm + args.rounds):  # the first round warms caches and the page cache (tiny: no warm-up)
        theirs = timed_datatrove(corpus, work / "datatrove", args.tokenizer, eos)
        ours = timed_pack_in_process(corpus, work / "ours", args.tokenizer, "local")
        if round_ >= warm:
            ratios.append(theirs / ours)  # same tokens both sides: the time ratio is the tokens/s ratio
    results["vs_datatrove"] = ratios
    vs = f"{statistics.median(ratios):.2f}x" if ratios else "not run"
    if ratios:
        print(f"ours vs datatrove DocumentTokenizer (tokens/s): median {vs} ({min(ratios):.2f}-{max(ratios):.2f}, "
              f"{len(ratios)} rounds)")
    print(f"ratio {max(args.scales)}x/{min(args.scales)}x wall {wall:.2f}x of linear, peak RSS {rss:.2f}x; "
          f"ours/datatrove tokens/s {vs}; {first['bytes_per_token']:.3f} bytes/token")
    (work / "results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
