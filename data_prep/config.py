"""The data_prep recipe: sources, steps in order, executor and its size, split sizes, output folder."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from llm_recipes.config import ConfigError
from llm_recipes.executors import ExecutorArguments

from data_prep.sources import SourceSpec, parse_sources
from data_prep.steps import STEPS, StepParams, parse_step_spec, step_name_of

# Per-document steps run first (any order the YAML gives), then the corpus-wide ones in this fixed order.
STAGE_ORDER = {"document": 0, "dedup": 1, "split": 2}


@dataclass
class DataPrepArguments(ExecutorArguments):  # executor, tasks, workers, ray_* and slurm_* (llm_recipes/executors.py)
    sources: list[SourceSpec] = field(
        default_factory=list,
        metadata={"help": "Sources: list of {path, text_column, sample_by, weight, label, name, split}. path is a local "
                  "file / folder / glob (.jsonl .txt .html .json .csv .tsv .parquet; ${DATA_DIR} expands) or a Hub "
                  "dataset (needs network: run with HF_HUB_OFFLINE=0 HF_DATASETS_OFFLINE=0, since data_prep defaults both to "
                  "1). weight repeats (2.0) or subsamples (0.5) a source's train documents; language (ISO 639-1) "
                  "labels a source whose language is known."},
    )
    steps: list[Union[dict, str]] = field(
        default_factory=list,
        metadata={"help": "Steps in order: list of {step: name, <parameter>: value}. `python -m data_prep --list_steps` "
                  "prints every step with its parameters and their published defaults."},
    )
    output_dir: str = field(default="outputs/tiny/data", metadata={"help": "Final folder: train/ validation/ test/ "
                            "JSONL shards with a `text` column, report.json, report.md, length_histogram.png."})
    work_dir: str | None = field(
        default=None,
        metadata={"help": "Intermediate files and datatrove logs (default <output_dir>_work). Kept between runs so a "
                  "rerun skips completed tasks; wiped when the config or the source files change."},
    )
    dedup_tasks: int = field(
        default=1,
        metadata={"help": "Tasks of the dedup bucket stage: each merges every dedup_tasks-th bucket (exact + 14 MinHash "
                  "bands) of all tasks' sorted signature files. More tasks, more buckets merged at once; the result "
                  "is the same."},
    )
    dedup_chunk_records: int = field(
        default=1_000_000,
        metadata={"help": "Signature records (44 bytes each) a bucket task holds in memory at once, whatever the "
                  "corpus size."},
    )
    validation_size: float = field(default=0.05, metadata={"help": "Share of documents in validation (by text hash)."})
    test_size: float = field(default=0.05, metadata={"help": "Share of documents in test (by text hash)."})
    seed: int = field(default=42, metadata={"help": "Seed of the split, the source-weight sampling and augmentation."})
    write_dropped: bool = field(
        default=False, metadata={"help": "Also write every dropped document with its step and reason to dropped/."}
    )
    # Parsed forms of `sources` and `steps` (not config keys).
    parsed_sources: list[SourceSpec] = field(init=False, repr=False)
    parsed_steps: list[tuple[str, StepParams]] = field(init=False, repr=False)

    def __post_init__(self):
        self.parsed_sources = parse_sources(self.sources)
        if not self.parsed_sources:
            raise ConfigError("sources is empty: list at least one source")
        for source in self.parsed_sources:
            source.files()  # missing or unreadable paths fail here, before any work
        self.parsed_steps = []
        last_stage = 0
        for i, spec in enumerate(self.steps):
            params = parse_step_spec(i, spec)
            name = step_name_of(spec)
            stage = STEPS[name].stage
            if STAGE_ORDER[stage] < last_stage:
                raise ConfigError(f"steps[{i}] ({name}): per-document steps come first, then dedup_exact / "
                                  "dedup_minhash, then augment")
            last_stage = STAGE_ORDER[stage]
            if any(n == name for n, _ in self.parsed_steps):
                raise ConfigError(f"steps[{i}]: step '{name}' is listed twice")
            self.parsed_steps.append((name, params))
        self._check_languages_known()
        self.check_executor()
        for key in ("dedup_tasks", "dedup_chunk_records"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1, got {getattr(self, key)}")
        if not (0 <= self.validation_size and 0 <= self.test_size and self.validation_size + self.test_size < 1):
            raise ConfigError("validation_size and test_size must be >= 0 and sum to less than 1")
        if self.work_dir is None:
            self.work_dir = self.output_dir.rstrip("/") + "_work"

    def _check_languages_known(self) -> None:
        """A rule limited to some languages would silently skip documents nobody labelled: refuse that config."""
        if self.step_params("language_id") is not None:
            return
        unlabelled = [s.path for s in self.parsed_sources if s.language is None]
        limited = [n for n, p in self.parsed_steps if p.enabled and p.languages is not None]
        if unlabelled and limited:
            raise ConfigError(
                f"steps {limited} apply only to some languages, but no language_id step labels the documents of "
                f"{unlabelled}: add {{step: language_id}} or set language: on each source"
            )

    def step_params(self, name: str) -> StepParams | None:
        return next((p for n, p in self.parsed_steps if n == name and p.enabled), None)

    def data_fingerprint(self) -> dict[str, Any]:
        """What decides the intermediate files: config minus executor settings, plus each source file's size/mtime."""
        files = []
        for s in self.parsed_sources:
            for p in s.files() or []:
                st = p.stat()
                files.append([str(p), st.st_size, st.st_mtime_ns])
        code = hashlib.sha256()
        for path in sorted(Path(__file__).parent.rglob("*.py")):  # a code change redoes the work as well
            code.update(path.read_bytes())
        return {
            "code": code.hexdigest(),
            "sources": self.sources, "steps": self.steps, "tasks": self.tasks, "dedup_tasks": self.dedup_tasks,
            "seed": self.seed,
            "validation_size": self.validation_size, "test_size": self.test_size,
            "write_dropped": self.write_dropped, "files": files,
        }
