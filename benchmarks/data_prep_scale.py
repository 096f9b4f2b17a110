"""How `python -m data_prep` grows with the corpus: wall time and peak memory of every stage at 1x, 4x and 16x.

    .venv/bin/python benchmarks/data_prep_scale.py                  # ~35 min on 2 cores (downloads linux-doc-6.1 once)
    .venv/bin/python benchmarks/data_prep_scale.py --tiny           # a minute: the test suite runs this

Corpus (1x): the shipped text (C4 sample, WikiText-2, Tiny Shakespeare) plus the Linux kernel's documentation from
Debian's linux-doc-6.1 (as in data_prep_bench.py), at least 25 M characters. Scale k adds k-1 renamed copies: in copy
c every word but Gopher's eight stop words becomes another corpus word of the same length (a permutation per copy),
so the text keeps its lines, punctuation, numbers, stop words and repetitions (the rules drop about the same share)
but shares almost no word 5-grams with the other copies (recombining halves of documents would have made many pairs at 1/3
Jaccard, which FineWeb's 14 x 8 bands catch at about 0.2 % each). Each scale plants 1 % near-copies of its own
documents (new header and footer / 1 % of words changed / last 5 % cut), the ground truth for dedup recall.
Each stage (documents, buckets, clusters, output, publish) runs in its own process, web.yaml's English steps, 4 tasks on
2 workers; its peak RSS is the largest resident size that process or any of its workers reached (sampled every 50 ms).
Dedup precision: a removed document counts as right when it is an exact duplicate or has a word 5-gram Jaccard
similarity >= 0.5 with the document it was matched to (the bands aim at 0.75); recall: of the planted pairs whose two documents both passed the quality
rules, the share where one of the two was removed as a duplicate.
Then: Ray with 2 workers vs 1 (both pools warmed by a first run, 3 timed runs each, alternating), and the filters
against datatrove's stock ones, the median of 5 alternating rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import yaml

from data_prep_bench import REPO, bench_filters, kernel_docs, near_copy, shipped_texts

STAGES = ("documents", "buckets", "clusters", "output", "publish")


_WORD = re.compile(r"[A-Za-z]+|[\u4e00-\u9fff]")  # a Latin word or one Han character (kernel docs have zh_CN)


class Renamer:
    """Copy c (>= 1) of the corpus: every word but Gopher's eight stop words is replaced by another corpus word of the
    same length (a fixed permutation per copy), in the same case. Lines, punctuation, numbers, word lengths, stop words
    and repetitions stay as they were, so the rules see the same kind of text; the word 5-grams are new, so no copy
    is a near-duplicate of another (keeping the 300 most frequent words instead left short texts at 1/2 Jaccard)."""

    def __init__(self, texts: list[str]):
        counts = Counter(w.lower() for t in texts for w in _WORD.findall(t))  # Han characters: words of length 1
        self.fixed = {"the", "be", "to", "of", "and", "that", "have", "with"}
        self.groups: dict[tuple[int, bool], list[str]] = {}  # (length, Latin): a Han character stays a Han character
        for w in sorted(counts):
            if w not in self.fixed:
                self.groups.setdefault((len(w), w.isascii()), []).append(w)

    def copy(self, texts: list[str], copy: int) -> list[str]:
        rng, mapping = random.Random(copy), {}
        for words in self.groups.values():
            shuffled = list(words)
            rng.shuffle(shuffled)
            mapping.update(zip(words, shuffled))

        def rename(m: re.Match) -> str:
            word = m.group()
            new = mapping.get(word.lower())
            if new is None:
                return word
            if not word.isascii():
                return new
            return new.upper() if word.isupper() and len(word) > 1 else new.capitalize() if word[0].isupper() else new

        return [_WORD.sub(rename, t) for t in texts]


def write_corpus(base: list[str], scale: int, folder: Path, files_per_copy: int) -> dict[str, str]:
    """The scaled corpus as JSONL shards plus planted.jsonl; returns {planted copy id: original id}."""
    folder.mkdir(parents=True, exist_ok=True)
    truth, rng, docs, renamer = {}, random.Random(scale), [], Renamer(base)
    for copy in range(scale):
        texts = base if copy == 0 else renamer.copy(base, copy)
        per_file = -(-len(texts) // files_per_copy)
        for f in range(files_per_copy):
            name = f"part_{copy:03d}_{f:02d}.jsonl"
            chunk = texts[f * per_file : (f + 1) * per_file]
            with open(folder / name, "w", encoding="utf-8") as out:
                out.writelines(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in chunk)
            docs += [(f"corpus/{name}:{n + 1}", t) for n, t in enumerate(chunk) if len(t.split()) >= 150]
    planted = rng.sample(docs, len(docs) // 100)
    with open(folder / "planted.jsonl", "w", encoding="utf-8") as out:
        for n, (doc_id, text) in enumerate(planted):
            out.write(json.dumps({"text": near_copy(text, rng, n % 3)}, ensure_ascii=False) + "\n")
            truth[f"corpus/planted.jsonl:{n + 1}"] = doc_id
    return truth


def config_for(folder: Path, out: Path, tasks: int, workers: int, dedup_tasks: int) -> Path:
    steps = [s for s in yaml.safe_load((REPO / "configs/data/web.yaml").read_text())["steps"]
             if s["step"] not in ("extract_html", "zh_quality")]
    config = {"sources": [{"path": str(folder), "label": "corpus", "language": "en"}], "steps": steps,
              "output_dir": str(out), "tasks": tasks, "workers": workers, "dedup_tasks": dedup_tasks,
              "validation_size": 0.005, "test_size": 0.005}
    path = out.parent / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True))
    return path


def run_stage(config: Path, stage: str) -> dict:
    """Child process: one stage; prints its seconds."""
    from data_prep.cli import parse
    from data_prep.layout import Layout
    from data_prep.pipeline import run_stage as run_pipeline_stage
    from data_prep.pipeline import stage_pipelines
    from data_prep.publish import publish

    args = parse(["--config", str(config)])
    layout = Layout(Path(args.work_dir))
    start = time.perf_counter()
    if stage == "publish":
        publish(args)
    else:
        run_pipeline_stage(args, layout, stage, stage_pipelines(args, layout)[stage])
    return {"stage": stage, "seconds": time.perf_counter() - start}


def peak_rss(process: subprocess.Popen, every: float = 0.05) -> float:
    """Wait for `process`; the largest resident size (MiB) any single process of its tree reached, sampled. (Linux
    keeps a process's ru_maxrss across exec, so a child started by a big parent would report the parent's.)"""
    import psutil

    root, peak = psutil.Process(process.pid), 0
    while process.poll() is None:
        try:
            for p in [root, *root.children(recursive=True)]:
                peak = max(peak, p.memory_info().rss)
        except psutil.Error:
            pass  # a worker that just ended
        time.sleep(every)
    return peak / 2**20


def run_scale(config: Path) -> list[dict]:
    from data_prep.cli import parse
    from data_prep.pipeline import prepare_work_dir

    prepare_work_dir(parse(["--config", str(config)]))  # a fresh work folder for this config
    rows = []
    for stage in STAGES:
        with tempfile.TemporaryFile("w+") as out:
            child = subprocess.Popen([sys.executable, __file__, "--_stage", stage, "--_config", str(config)],
                                     stdout=out, stderr=subprocess.DEVNULL, text=True)
            peak = peak_rss(child)
            if child.returncode:
                raise RuntimeError(f"stage {stage} failed ({child.returncode}); rerun it: {child.args}")
            out.seek(0)
            rows.append({**json.loads(out.read().strip().splitlines()[-1]), "peak_rss_mib": peak})
    return rows


def _shingles(text: str) -> set:
    """The shingles dedup itself uses: character 5-grams for Chinese, word 5-grams otherwise."""
    from data_prep.dedup import MinhashParams, shingles
    from data_prep.text import cjk_count

    language = "zh" if cjk_count(text) > 0.3 * len(text.replace(" ", "")) else "en"
    return set(shingles(text, language, MinhashParams()))


def dedup_quality(work: Path, folder: Path, truth: dict[str, str]) -> dict:
    removed = [json.loads(line) for p in sorted((work / "dedup" / "removed").glob("*.jsonl")) for line in p.open()]
    gone = {r["id"] for r in removed}
    wanted = {r["id"] for r in removed} | {r["duplicate_of"] for r in removed}
    planted = set(truth) | set(truth.values())
    reached = set()  # planted pairs that both passed the quality rules: dedup's part of the job
    for path in (work / "documents").glob("*.jsonl"):
        with open(path, encoding="utf-8") as f:
            reached |= {i for i in (json.loads(line)["id"] for line in f) if i in planted}
    texts = {}
    for path in sorted(folder.glob("*.jsonl")):  # one pass, keeping only the documents in a removed pair
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, start=1):
                if f"corpus/{path.name}:{n}" in wanted:
                    texts[f"corpus/{path.name}:{n}"] = json.loads(line)["text"]
    right = 0
    for r in removed:
        if r["reason"] == "exact_duplicate":
            right += 1
            continue
        a, b = _shingles(texts[r["id"]]), _shingles(texts[r["duplicate_of"]])
        right += len(a & b) >= 0.5 * len(a | b)
    pairs = [(c, o) for c, o in truth.items() if c in reached and o in reached]
    found = sum(copy in gone or original in gone for copy, original in pairs)
    return {"removed": len(removed), "precision": right / max(1, len(removed)), "planted": len(pairs),
            "recall": found / max(1, len(pairs))}


def bench_ray(folder: Path, out: Path, runs: int) -> dict:
    import ray

    from data_prep.cli import main

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    times: dict[int, list[float]] = {1: [], 2: []}
    try:
        for run in range(runs + 1):  # run 0 warms both pools (workers, imports, lingua's models) and is not timed
            for workers in (1, 2):
                config = config_for(folder, out / f"ray_w{workers}_r{run}", tasks=4, workers=workers, dedup_tasks=2)
                start = time.perf_counter()
                main(["--config", str(config), "--executor", "ray"])
                if run:
                    times[workers].append(time.perf_counter() - start)
    finally:
        ray.shutdown()
    ratios = [a / b for a, b in zip(times[1], times[2])]
    return {"w1_s": times[1], "w2_s": times[2], "speedup_median": statistics.median(ratios),
            "speedup_min": min(ratios), "speedup_max": max(ratios)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--tiny", action="store_true", help="shipped C4 sample only, scales 1 and 2, one round")
    parser.add_argument("--skip_ray", action="store_true")
    parser.add_argument("--ray_runs", type=int, default=3)
    parser.add_argument("--filter_rounds", type=int, default=5)
    parser.add_argument("--work_dir", default=str(REPO / "outputs" / "bench" / "data_prep_scale"))
    parser.add_argument("--_stage", help=argparse.SUPPRESS)
    parser.add_argument("--_config", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._stage:
        print(json.dumps(run_stage(Path(args._config), args._stage)))
        return
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    if args.tiny:
        base = [t for t in shipped_texts() if len(t) > 500][:400]
        args.scales, args.skip_ray, args.filter_rounds = [1, 2], True, 1
    else:
        base = shipped_texts() + kernel_docs(REPO / "outputs" / "bench" / "data_prep")
    chars = sum(map(len, base))
    print(f"base corpus: {len(base):,} documents, {chars / 1e6:.1f} M characters; {platform.machine()}, "
          f"{os.cpu_count()} cores")
    results = {"base_docs": len(base), "base_chars": chars, "scales": {}}
    for scale in args.scales:
        folder = work / f"corpus_{scale}x"
        truth = write_corpus(base, scale, folder, files_per_copy=4)
        config = config_for(folder, work / f"out_{scale}x", tasks=4, workers=2, dedup_tasks=2)
        rows = run_scale(config)
        quality = dedup_quality(Path(f"{work / f'out_{scale}x'}_work"), folder, truth)
        report = json.loads((work / f"out_{scale}x" / "report.json").read_text())
        kept = sum(report["documents_out"].values()) / report["records_read"]
        results["scales"][scale] = {"stages": rows, "dedup": quality, "chars": chars * scale,
                                    "records": report["records_read"], "kept": kept}
        print(f"{scale:>3}x: {report['records_read']:,} records, {kept:.1%} kept; " + ", ".join(f"{r['stage']} {r['seconds']:.1f} s / {r['peak_rss_mib']:.0f} MiB"
                                           for r in rows)
              + f"; dedup precision {quality['precision']:.3f}, recall {quality['recall']:.3f} "
                f"({quality['planted']} planted, {quality['removed']} removed)")
    first, last = min(args.scales), max(args.scales)
    growth = last / first
    a, b = results["scales"][first]["stages"], results["scales"][last]["stages"]
    wall_a, wall_b = sum(r["seconds"] for r in a), sum(r["seconds"] for r in b)
    print(f"\n{first}x -> {last}x ({growth:.0f}x the data): wall {wall_b / wall_a:.2f}x = "
          f"{wall_b / wall_a / growth:.2f} of linear (goal <= 1.2)")
    for ra, rb in zip(a, b):
        print(f"  {ra['stage']:9} peak RSS {ra['peak_rss_mib']:6.0f} -> {rb['peak_rss_mib']:6.0f} MiB = "
              f"{rb['peak_rss_mib'] / ra['peak_rss_mib']:.2f}x (goal <= 1.5 except clusters); wall "
              f"{ra['seconds']:.1f} -> {rb['seconds']:.1f} s")
    if not args.skip_ray:
        r = bench_ray(work / f"corpus_{first}x", work, args.ray_runs)
        results["ray"] = r
        print(f"ray: 1 worker {statistics.median(r['w1_s']):.1f} s, 2 workers {statistics.median(r['w2_s']):.1f} s; "
              f"speedup median {r['speedup_median']:.2f}x ({r['speedup_min']:.2f}-{r['speedup_max']:.2f}, "
              f"{args.ray_runs} runs)")
    rounds = [bench_filters(base[:3000]) for _ in range(args.filter_rounds)]  # each round runs stock, then ours
    speedups = [f["ours_docs_s"] / f["stock_docs_s"] for f in rounds]
    results["filters"] = {"speedups": speedups, "same_decision": rounds[0]["same_decision"]}
    print(f"filters vs datatrove stock: median {statistics.median(speedups):.2f}x "
          f"({min(speedups):.2f}-{max(speedups):.2f}, {len(rounds)} rounds); same decision "
          f"{rounds[0]['same_decision']:.2%}")
    print(f"ratio {last}x/{first}x: wall {wall_b / wall_a / growth:.2f}x of linear, largest peak RSS "
          f"{max(rb['peak_rss_mib'] / ra['peak_rss_mib'] for ra, rb in zip(a, b)):.2f}x; filters ours/datatrove "
          f"{statistics.median(speedups):.2f}x" + (f"; Ray 2/1 workers {results['ray']['speedup_median']:.2f}x"
                                                   if "ray" in results else ""))
    (work / "results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
