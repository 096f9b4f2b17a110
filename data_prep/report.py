"""The funnel report: documents and characters after each step, drops per rule, language mix, length histogram.

Counts come from datatrove's per-task stats files (summed over tasks), so they are the same whichever executor ran
the tasks. The report checks that every record read is either in the output or counted as a drop, and refuses to
publish otherwise. report.json holds no timings or absolute paths, so two runs on the same input compare equal.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from data_prep.layout import Layout


class AccountingError(RuntimeError):
    """Some records are neither in the output nor counted as dropped."""


def _value(v: Any) -> float:
    return v["total"] if isinstance(v, dict) else v


def stage_stats(logs: Path) -> list[tuple[str, dict[str, float]]]:
    """Per step of one stage: (name, {stat: total over tasks}), in pipeline order."""
    merged: list[tuple[str, dict[str, float]]] = []
    for path in sorted((logs / "stats").glob("*.json")):
        steps = json.loads(path.read_text())
        for i, step in enumerate(steps):
            if len(merged) <= i:
                merged.append((step["name"], defaultdict(float)))
            for key, value in step.get("stats", {}).items():
                merged[i][1][key] += _value(value)
    return merged


def funnel(layout: Layout) -> list[dict[str, Any]]:
    rows = []
    for stage in ("documents", "dedup", "output"):
        for name, stats in stage_stats(layout.stage_logs(stage)):
            if not name.startswith("data_prep: ") or name.endswith(("dedup_signatures", "dedup_clusters")):
                continue
            step = name.removeprefix("data_prep: ")
            drops = {k.removeprefix("dropped_"): int(v) for k, v in sorted(stats.items()) if k.startswith("dropped_")}
            extra = {k: int(v) for k, v in sorted(stats.items())
                     if k.startswith(("replaced_", "language_", "lines_removed", "documents_with_", "docs_out_",
                                      "weight_repeats", "augmented_copies"))}
            rows.append({
                "stage": stage,
                "step": step,
                "docs_in": int(stats.get("docs_in", stats.get("records_read", 0))),
                "docs_out": int(stats.get("docs_out", 0)),
                "chars_out": int(stats.get("chars_out", 0)),
                "dropped": int(stats.get("dropped", 0)),
                "drops": drops,
                **({"counts": extra} if extra else {}),
            })
    return rows


def read_splits(folder: Path) -> dict[str, list[dict]]:
    out = {}
    for split in ("train", "validation", "test"):
        records = []
        for path in sorted((folder / split).glob("*.jsonl")):
            with open(path, encoding="utf-8") as f:
                records += [json.loads(line) for line in f]
        out[split] = records
    return out


def build_report(layout: Layout, splits_folder: Path, config: dict) -> dict[str, Any]:
    rows = funnel(layout)
    splits = read_splits(splits_folder)
    read = rows[0]["docs_in"] if rows else 0
    total_dropped = sum(r["dropped"] for r in rows)
    originals = sum(1 for recs in splits.values() for r in recs if "#aug" not in r["id"] and "#rep" not in r["id"])
    accounted = originals + total_dropped
    if accounted != read:
        raise AccountingError(f"{read} records read but {originals} in the output + {total_dropped} dropped")
    drops = Counter()
    for r in rows:
        for reason, n in r["drops"].items():
            drops[f"{r['step']}:{reason}"] += n
    bad = []
    for path in sorted(layout.bad_records.glob("*.jsonl")):
        bad += [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    bad.sort(key=lambda b: b["where"])
    removed = []
    if layout.removed.exists():
        removed = [json.loads(line) for line in layout.removed.read_text(encoding="utf-8").splitlines()]
    fingerprint = hashlib.sha256()
    for path in sorted(splits_folder.glob("*/*.jsonl")):
        fingerprint.update(f"{path.parent.name}/{path.name}\n".encode())
        fingerprint.update(path.read_bytes())
    return {
        "fingerprint": fingerprint.hexdigest(),  # sha256 of the split files: same input, same config -> same value
        "records_read": read,
        "all_records_accounted": True,
        "documents_out": {s: len(recs) for s, recs in splits.items()},
        "characters_out": {s: sum(len(r["text"]) for r in recs) for s, recs in splits.items()},
        "funnel": rows,
        "drops_by_rule": dict(sorted(drops.items(), key=lambda kv: (-kv[1], kv[0]))),
        "languages": {s: dict(sorted(Counter(r["language"] or "unknown" for r in recs).items()))
                      for s, recs in splits.items()},
        "sources": {s: dict(sorted(Counter(r["source"] for r in recs).items())) for s, recs in splits.items()},
        "length_histogram": length_histogram([len(r["text"]) for r in splits["train"]]),
        "bad_records": bad,
        "duplicates_removed_examples": removed[:20],
        "config": config,
    }


def length_histogram(lengths: list[int]) -> dict[str, int]:
    """Documents per power-of-two character-length bucket."""
    buckets = Counter(2 ** max(0, math.ceil(math.log2(max(n, 1)))) for n in lengths)
    return {f"<={k}": buckets[k] for k in sorted(buckets)}


def write_histogram_png(splits: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    by_lang: dict[str, list[int]] = defaultdict(list)
    for r in splits["train"]:
        by_lang[r["language"] or "unknown"].append(len(r["text"]))
    top = max((max(v) for v in by_lang.values()), default=1)
    bins = [2**i for i in range(0, max(1, math.ceil(math.log2(max(top, 2)))) + 1)]
    for lang in sorted(by_lang):
        ax.hist(by_lang[lang], bins=bins, alpha=0.6, label=f"{lang} ({len(by_lang[lang])})")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("characters per document (train)")
    ax.set_ylabel("documents")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)


def markdown(report: dict[str, Any]) -> str:
    lines = ["# data_prep report", "", f"Records read: {report['records_read']:,}; every one is in the output or "
             "counted below as a drop.", "", "| split | documents | characters | languages |", "|---|---:|---:|---|"]
    for s, n in report["documents_out"].items():
        langs = ", ".join(f"{k} {v}" for k, v in report["languages"][s].items())
        lines.append(f"| {s} | {n:,} | {report['characters_out'][s]:,} | {langs} |")
    lines += ["", "## Funnel", "", "| stage | step | docs in | docs out | chars out | dropped | reasons | counts |",
              "|---|---|---:|---:|---:|---:|---|---|"]
    for r in report["funnel"]:
        reasons = ", ".join(f"{k} {v}" for k, v in r["drops"].items())
        counts = ", ".join(f"{k} {v}" for k, v in r.get("counts", {}).items())  # lines removed, PII replaced, ...
        lines.append(f"| {r['stage']} | {r['step']} | {r['docs_in']:,} | {r['docs_out']:,} | {r['chars_out']:,} | "
                     f"{r['dropped']:,} | {reasons} | {counts} |")
    lines += ["", "## Length histogram (train, characters)", "", "![length histogram](length_histogram.png)", "",
              "| bucket | documents |", "|---|---:|"]
    lines += [f"| {k} | {v:,} |" for k, v in report["length_histogram"].items()]
    if report["bad_records"]:
        lines += ["", f"## Bad records ({len(report['bad_records'])} logged)", ""]
        lines += [f"- `{b['where']}`: {b['reason']}" for b in report["bad_records"][:50]]
    return "\n".join(lines) + "\n"
