"""Helpers for the data_prep tests: steps run on single documents through their counting run loop."""

import hashlib
import json
from collections import Counter
from pathlib import Path

from datatrove.data import Document

from data_prep.cli import main
from data_prep.steps import STEPS


def make_step(name: str, **params):
    cls = STEPS[name]
    return cls(cls.Params(**params))


def apply(step, text: str, language: str | None = "en", **meta):
    """Run one step on one document through its counting run loop: the kept text, or None when dropped."""
    metadata = {"language": language, **meta} if language else dict(meta)
    out = list(step.run(iter([Document(text=text, id="t", metadata=metadata)])))
    return out[0].text if out else None


def reason(step, text: str, language: str = "en"):
    """The drop reason of a rule step (None = kept)."""
    return step.process(Document(text=text, id="t", metadata={"language": language}))


TINY = "configs/data/tiny.yaml"


def run(repo_root, out: Path, *extra: str, config: str = TINY) -> Path:
    return main(["--config", str(repo_root / config), "--output_dir", str(out), *extra])


def split_hashes(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.glob("*/*.jsonl")) if p.parts[-2] in ("train", "validation", "test")}


def records(out: Path, split: str) -> list[dict]:
    return [json.loads(line) for p in sorted((out / split).glob("*.jsonl")) for line in p.read_text().splitlines()]


def originals(out: Path) -> tuple[Counter, Counter]:
    """Documents and characters per source in the output, repeats (#rep) and augmented copies left out."""
    docs, chars = Counter(), Counter()
    for split in ("train", "validation", "test"):
        for r in records(out, split):
            if not r["augmented"] and "#rep" not in r["id"]:
                docs[r["source"]] += 1
                chars[r["source"]] += len(r["text"])
    return docs, chars


def assert_funnel_adds_up(report: dict, out: Path) -> None:
    """The funnel per source against the per-step totals and the output files: every drop of every rule is some
    source's, and every source's records and characters are in the output or taken by a step."""
    per_source = report["sources_funnel"]
    by_rule = Counter()
    for s in per_source.values():
        for step, row in s["steps"].items():
            assert row["documents_dropped"] == sum(d["documents"] for d in row["drops"].values())
            assert row["characters_dropped"] == sum(d["characters"] for d in row["drops"].values())
            by_rule.update({(step, reason): d["documents"] for reason, d in row["drops"].items()})
    assert +by_rule == Counter({(r["step"], k): v for r in report["funnel"] for k, v in r["drops"].items()})
    docs, chars = originals(out)
    for label, s in per_source.items():
        taken = s["steps"].values()
        assert s["records_read"] == s["documents_out"] + sum(t["documents_dropped"] for t in taken), label
        assert s["characters_read"] == s["characters_out"] + sum(
            t["characters_dropped"] + t["characters_removed"] for t in taken), label
        assert (s["documents_out"], s["characters_out"]) == (docs[label], chars[label]), label
    assert sum(s["records_read"] for s in per_source.values()) == report["records_read"]
