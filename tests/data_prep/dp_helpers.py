"""Helpers for the data_prep tests: steps run on single documents through their counting run loop."""

import hashlib
import json
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
