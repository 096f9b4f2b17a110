"""The funnel report: documents and characters after each step, drops per rule, the same per source, language mix,
length histogram, and a warning for any step that took more than half of a source's characters.

Counts come from datatrove's per-task stats files (summed over tasks), so they are the same whichever executor ran
the tasks; the split files are streamed line by line, never held in memory. The report checks that every record read
is either in the output or counted as a drop, and publish refuses otherwise. report.json holds no timings or
absolute paths, so two runs on the same input compare equal.
"""

from __future__ import annotations

import hashlib
import heapq
import json
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_prep.layout import Layout
from data_prep.steps.base import (
    SRC_CHARS_DROPPED,
    SRC_CHARS_READ,
    SRC_CHARS_REMOVED,
    SRC_DOCS_DROPPED,
    SRC_RECORDS_READ,
)

SPLITS = ("train", "validation", "test")
WARN_SHARE = 0.5  # a step that takes more than this share of a source's characters is named in the warnings
# Not a verdict on the text, so no warning: split's only drop is the subsample a source weight below 1 asks for, and
# markup is not text (extract_html removing most of a page's characters is its job; only its drops can warn).
UNWARNED_STEPS = ("split",)
MARKUP_STEPS = ("extract_html",)
MAX_BAD_RECORDS, MAX_REMOVED_EXAMPLES = 1000, 20


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


Step = tuple[str, str, dict[str, float]]  # (stage, step name, stats summed over tasks)


def funnel_steps(layout: Layout) -> list[Step]:
    """The steps documents flow through, which are the funnel's rows: the reader, the per-document steps, dedup and
    split. The dedup steps that only index documents (`dedup_signatures`, `dedup_buckets`, `dedup_clusters`, ...,
    and the stages between documents and output that hold nothing else) neither take nor drop any."""
    steps = []
    for stage in ("documents", "output"):
        for name, stats in stage_stats(layout.stage_logs(stage)):
            if name.startswith("data_prep: ") and not name.startswith("data_prep: dedup_"):
                steps.append((stage, name.removeprefix("data_prep: "), stats))
    return steps


def funnel(steps: list[Step]) -> list[dict[str, Any]]:
    rows = []
    for stage, step, stats in steps:
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


def length_bucket(n: int) -> int:
    """The smallest power of two >= n (1 for an empty text): bucket `<=k` holds lengths in (k/2, k]."""
    return 1 << (max(n, 1) - 1).bit_length()


def histogram(buckets: Counter) -> dict[str, int]:
    return {f"<={k}": buckets[k] for k in sorted(buckets)}


@dataclass
class SplitCounts:
    """What the report needs from the split files, counted line by line: the corpus never sits in memory."""

    documents: Counter = field(default_factory=Counter)
    characters: Counter = field(default_factory=Counter)
    languages: defaultdict = field(default_factory=lambda: defaultdict(Counter))  # split -> language -> documents
    sources: defaultdict = field(default_factory=lambda: defaultdict(Counter))  # split -> source -> documents
    originals: Counter = field(default_factory=Counter)  # source -> documents that are no #rep / #aug copy
    original_chars: Counter = field(default_factory=Counter)
    train_lengths: defaultdict = field(default_factory=lambda: defaultdict(Counter))  # language -> bucket -> docs

    def add(self, split: str, record: dict) -> None:
        n, language, source = len(record["text"]), record["language"] or "unknown", record["source"]
        self.documents[split] += 1
        self.characters[split] += n
        self.languages[split][language] += 1
        self.sources[split][source] += 1
        if "#aug" not in record["id"] and "#rep" not in record["id"]:
            self.originals[source] += 1
            self.original_chars[source] += n
        if split == "train":
            self.train_lengths[language][length_bucket(n)] += 1


def count_splits(folder: Path) -> SplitCounts:
    counts = SplitCounts()
    for split in SPLITS:
        for path in sorted((folder / split).glob("*.jsonl")):
            with open(path, encoding="utf-8") as f:
                for line in f:
                    counts.add(split, json.loads(line))
    return counts


def fingerprint(folder: Path) -> str:
    """sha256 of the split files (names and bytes), read in chunks: same input, same config -> same value."""
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*/*.jsonl")):
        digest.update(f"{path.parent.name}/{path.name}\n".encode())
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def _jsonl(paths) -> Iterator[dict]:
    for path in paths:
        with open(path, encoding="utf-8") as f:
            yield from (json.loads(line) for line in f)


def bad_records(folder: Path, cap: int = MAX_BAD_RECORDS) -> list[dict]:
    """The first `cap` bad records by file and line; a bounded heap, whatever the number of tasks and their logs."""
    return heapq.nsmallest(cap, _jsonl(sorted(folder.glob("*.jsonl"))), key=lambda b: b["where"])


def removed_examples(folder: Path, cap: int = MAX_REMOVED_EXAMPLES) -> list[dict]:
    """The first `cap` removed duplicates in source order, whatever the number of tasks (a bounded heap)."""
    first = heapq.nsmallest(cap, _jsonl(sorted(folder.glob("*.jsonl"))), key=lambda r: r["order"])
    return [{k: v for k, v in r.items() if k != "order"} for r in first]


def sources_funnel(steps: list[Step], counts: SplitCounts, order: list[str] | None = None) -> dict[str, dict]:
    """Per source label: records and characters read, what each step dropped (documents and their characters, per
    reason) or removed from the documents it kept, and the documents and characters left in the output."""
    table: dict[str, dict] = defaultdict(lambda: {"records_read": 0, "characters_read": 0, "steps": {}})

    def step_of(label: str, step: str) -> dict:
        return table[label]["steps"].setdefault(
            step, {"documents_dropped": 0, "characters_dropped": 0, "characters_removed": 0, "drops": {}})

    for _, step, stats in steps:
        for key, value in sorted(stats.items()):
            value = int(value)
            if key.startswith(SRC_RECORDS_READ):
                table[key.removeprefix(SRC_RECORDS_READ)]["records_read"] += value
            elif key.startswith(SRC_CHARS_READ):
                table[key.removeprefix(SRC_CHARS_READ)]["characters_read"] += value
            elif key.startswith(SRC_CHARS_REMOVED):
                step_of(key.removeprefix(SRC_CHARS_REMOVED), step)["characters_removed"] += value
            elif key.startswith((SRC_DOCS_DROPPED, SRC_CHARS_DROPPED)):
                what = "documents" if key.startswith(SRC_DOCS_DROPPED) else "characters"
                label, reason = key.split("/", 1)[1].rsplit("/", 1)  # a label may hold a slash, a reason never
                row = step_of(label, step)
                row[f"{what}_dropped"] += value
                row["drops"].setdefault(reason, {"documents": 0, "characters": 0})[what] += value
    labels = list(order or [])
    labels += sorted((set(table) | set(counts.originals)) - set(labels), key=str)
    out = {}
    for label in labels:
        row = table[label]
        out[str(label)] = {**row, "documents_out": counts.originals[label], "characters_out": counts.original_chars[label]}
    return out


def share_warnings(per_source: dict[str, dict]) -> list[dict[str, Any]]:
    """Every step that took more than half of a source's characters (documents dropped plus text removed): usually a
    rule that does not fit that source, such as C4's end-punctuation rule on text written without full stops."""
    warnings = []
    for source, row in per_source.items():
        for step, s in row["steps"].items():
            if step in UNWARNED_STEPS:
                continue
            taken = s["characters_dropped"] + (0 if step in MARKUP_STEPS else max(s["characters_removed"], 0))
            if row["characters_read"] and taken / row["characters_read"] > WARN_SHARE:
                warnings.append({"source": source, "step": step, "share": round(taken / row["characters_read"], 4)})
    return warnings


def warning_text(w: dict[str, Any]) -> str:
    return f"{w['step']} took {w['share']:.0%} of the characters of source {w['source']}"


def build_report(layout: Layout, splits_folder: Path, config: dict, sources: list[str] | None = None) -> dict[str, Any]:
    """`sources`: the source labels in config order (the funnel per source lists them so)."""
    steps = funnel_steps(layout)
    rows = funnel(steps)
    counts = count_splits(splits_folder)
    read = rows[0]["docs_in"] if rows else 0
    drops = Counter()
    for r in rows:
        for reason, n in r["drops"].items():
            drops[f"{r['step']}:{reason}"] += n
    per_source = sources_funnel(steps, counts, sources)
    return {
        "fingerprint": fingerprint(splits_folder),
        "records_read": read,
        "all_records_accounted": sum(counts.originals.values()) + sum(r["dropped"] for r in rows) == read,
        "documents_out": {s: counts.documents[s] for s in SPLITS},
        "characters_out": {s: counts.characters[s] for s in SPLITS},
        "funnel": rows,
        "drops_by_rule": dict(sorted(drops.items(), key=lambda kv: (-kv[1], kv[0]))),
        "sources_funnel": per_source,
        "warnings": share_warnings(per_source),
        "languages": {s: dict(sorted(counts.languages[s].items())) for s in SPLITS},
        "sources": {s: dict(sorted(counts.sources[s].items())) for s in SPLITS},
        "length_histogram": histogram(sum(counts.train_lengths.values(), Counter())),
        "length_histogram_by_language": {lang: histogram(c) for lang, c in sorted(counts.train_lengths.items())},
        "bad_records": bad_records(layout.bad_records),
        "duplicates_removed_examples": removed_examples(layout.removed),
        "config": config,
    }


def check_accounting(report: dict[str, Any]) -> None:
    """Refuse to publish when some record is neither in the output nor counted as a drop."""
    if not report["all_records_accounted"]:
        out = sum(s["documents_out"] for s in report["sources_funnel"].values())
        dropped = sum(r["dropped"] for r in report["funnel"])
        raise AccountingError(f"{report['records_read']} records read but {out} in the output + {dropped} dropped")


def write_histogram_png(by_language: dict[str, dict[str, int]], path: Path) -> None:
    """Train documents per length bucket and language, drawn from the report's bucket counts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for lang, buckets in sorted(by_language.items()):
        tops = [int(k.removeprefix("<=")) for k in buckets]
        # Bucket <=k spans (k/2, k]: a bar from k/2 to k, all of the same width on the log2 axis.
        ax.bar([k / 2 for k in tops], list(buckets.values()), width=[k / 2 for k in tops], align="edge", alpha=0.6,
               label=f"{lang} ({sum(buckets.values())})")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("characters per document (train)")
    ax.set_ylabel("documents")
    if by_language:
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
    if report["warnings"]:
        lines += ["", "## Warnings", ""] + [f"- {warning_text(w)}" for w in report["warnings"]]
    lines += ["", "## Funnel", "", "| stage | step | docs in | docs out | chars out | dropped | reasons | counts |",
              "|---|---|---:|---:|---:|---:|---|---|"]
    for r in report["funnel"]:
        reasons = ", ".join(f"{k} {v}" for k, v in r["drops"].items())
        counts = ", ".join(f"{k} {v}" for k, v in r.get("counts", {}).items())  # lines removed, PII replaced, ...
        lines.append(f"| {r['stage']} | {r['step']} | {r['docs_in']:,} | {r['docs_out']:,} | {r['chars_out']:,} | "
                     f"{r['dropped']:,} | {reasons} | {counts} |")
    lines += funnel_per_source_md(report["sources_funnel"])
    lines += ["", "## Length histogram (train, characters)", "", "![length histogram](length_histogram.png)", "",
              "| bucket | documents |", "|---|---:|"]
    lines += [f"| {k} | {v:,} |" for k, v in report["length_histogram"].items()]
    if report["bad_records"]:
        lines += ["", f"## Bad records ({len(report['bad_records'])} logged)", ""]
        lines += [f"- `{b['where']}`: {b['reason']}" for b in report["bad_records"][:50]]
    return "\n".join(lines) + "\n"


def funnel_per_source_md(per_source: dict[str, dict]) -> list[str]:
    lines = ["", "## Funnel per source", "", "| source | records read | characters read | documents out | characters out |",
             "|---|---:|---:|---:|---:|"]
    for label, row in per_source.items():
        lines.append(f"| {label} | {row['records_read']:,} | {row['characters_read']:,} | {row['documents_out']:,} | "
                     f"{row['characters_out']:,} |")
    lines += ["", ("What each step took from each source: documents dropped with their characters, and characters "
                   "removed from the documents it kept (share: of the characters the source read)."), "",
              "| source | step | documents dropped | characters dropped | characters removed | share | reasons |",
              "|---|---|---:|---:|---:|---:|---|"]
    for label, row in per_source.items():
        for step, s in row["steps"].items():
            share = (s["characters_dropped"] + s["characters_removed"]) / max(row["characters_read"], 1)
            reasons = ", ".join(f"{k} {v['documents']}" for k, v in s["drops"].items())
            lines.append(f"| {label} | {step} | {s['documents_dropped']:,} | {s['characters_dropped']:,} | "
                         f"{s['characters_removed']:,} | {share:.1%} | {reasons} |")
    return lines
