"""Where a data_prep run keeps its work: one place that the pipeline, the publish step and the report all read, so
none of them imports another for it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class Layout:
    work: Path

    @property
    def logs(self) -> Path:
        return self.work / "logs"

    def stage_logs(self, stage: str) -> Path:
        return self.logs / stage

    documents = property(lambda self: self.work / "documents")
    signatures = property(lambda self: self.work / "dedup" / "signatures")  # <task>/<bucket>.npy, <task>/ids.npy
    pairs = property(lambda self: self.work / "dedup" / "pairs")  # <bucket>.pairs
    removed = property(lambda self: self.work / "dedup" / "removed")  # <document task>.jsonl
    splits = property(lambda self: self.work / "splits")
    dropped = property(lambda self: self.work / "dropped")
    bad_records = property(lambda self: self.work / "bad_records")
