"""The data of recipes/eval.py: held-out text per language, labelled sets split into eval and demonstrations, and
chat prompts. Every problem is one ConfigError line naming the file and the key."""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import datasets

from llm_recipes.config import ConfigError
from llm_recipes.corpus import (BUILDERS, TextSource, check_local_file, load_files, load_source, local_files,
                                script_language)

LANGUAGES = ("en", "zh")


@dataclass
class LMSet:
    """Held-out text for perplexity / bits per byte."""

    path: str
    language: str | None = None  # keep only documents whose script is this language (en / zh); None keeps all
    name: str | None = None  # default: the language
    text_column: str = "text"
    sample_by: str = "line"
    max_documents: int | None = None

    def __post_init__(self):
        if self.language not in (None, *LANGUAGES):
            raise ConfigError(f"lm_sets {self.path}: language must be one of {LANGUAGES}, not {self.language!r}")
        self.name = self.name or self.language or Path(self.path).stem


@dataclass
class ClassificationSet:
    """A labelled set scored by verbaliser log-likelihood after `template` (which holds `{text}`)."""

    path: str
    name: str = "sentiment"
    language: str = "en"  # of the template; the texts are checked against it
    text_column: str = "text"
    label_column: str = "label"
    template: str = "{text}\nSentiment:"
    verbalizers: dict = field(default_factory=lambda: {0: " negative", 1: " positive"})
    demo_path: str | None = None  # demonstrations from this file; default: demo_pool_size rows split off with the seed
    demo_pool_size: int = 64
    max_samples: int | None = None
    dataset_name: str | None = None  # shown in the report and the model card

    def __post_init__(self):
        if self.language not in LANGUAGES:
            raise ConfigError(f"classification set {self.name}: language must be one of {LANGUAGES}")
        if "{text}" not in self.template:
            raise ConfigError(f"classification set {self.name}: template has no {{text}} placeholder")
        if len(self.verbalizers) < 2:
            raise ConfigError(f"classification set {self.name}: verbalizers needs a word for at least two labels")
        self.verbalizers = {_label_key(k): v for k, v in self.verbalizers.items()}


def _label_key(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return str(value)


def load_lm_texts(s: LMSet) -> tuple[LMSet, list[str]]:
    ds = load_source(TextSource(path=s.path, text_column=s.text_column, sample_by=s.sample_by))
    texts = [t for t in ds["text"] if t and t.strip()]
    if s.language:
        texts = [t for t in texts if script_language(t) == s.language]
    texts = texts[:s.max_documents] if s.max_documents else texts
    if not texts:
        raise ConfigError(f"lm_sets {s.path}: no non-empty {s.language or ''} document")
    return s, texts


def read_table(path_spec: str, columns: tuple[str, ...]) -> datasets.Dataset:
    files = local_files(path_spec, BUILDERS)
    if not files:
        raise ConfigError(f"{path_spec}: no such file")
    for path in files:
        check_local_file(path)
    ds = load_files(files)
    missing = [c for c in columns if c not in ds.column_names]
    if missing:
        raise ConfigError(f"{path_spec}: no column {', '.join(map(repr, missing))} "
                          f"(columns: {', '.join(ds.column_names)}); set text_column / label_column")
    return ds


def _examples(s: ClassificationSet, ds: datasets.Dataset, dropped: Counter) -> list[tuple[str, object]]:
    keys = {str(k): k for k in s.verbalizers}
    out = []
    for text, label in zip(ds[s.text_column], ds[s.label_column]):
        if not text or not str(text).strip():
            dropped["empty_text"] += 1
        elif str(label) not in keys:
            dropped["label_without_verbalizer"] += 1
        else:
            out.append((str(text).strip(), keys[str(label)]))
    return out


def load_labelled(s: ClassificationSet, seed: int) -> tuple[ClassificationSet, dict]:
    """Eval examples and a disjoint demonstration pool (from demo_path, or split off with the seed)."""
    dropped = Counter()
    rows = _examples(s, read_table(s.path, (s.text_column, s.label_column)), dropped)
    if s.demo_path:
        demos = _examples(s, read_table(s.demo_path, (s.text_column, s.label_column)), dropped)
    else:
        rows = rows[:]
        random.Random(seed).shuffle(rows)
        demos, rows = rows[:s.demo_pool_size], rows[s.demo_pool_size:]
    rows = rows[:s.max_samples] if s.max_samples else rows
    if not rows:
        raise ConfigError(f"{s.path}: no labelled example left for evaluation")
    sample = [t for t, _ in rows[:200]]
    share = sum(script_language(t) == s.language for t in sample) / len(sample)
    if share < 0.5:
        raise ConfigError(f"{s.path}: the template of '{s.name}' is for language {s.language}, but only {share:.0%} "
                          f"of the texts are {s.language}; set language and a template in the texts' language")
    return s, {"texts": [t for t, _ in rows], "labels": [y for _, y in rows], "demos": demos,
               "dropped": dict(dropped)}


def load_prompts(path: str) -> list[dict]:
    """JSONL lines {"prompt": ..., "language": ...} or a .txt file with one prompt per line."""
    file = Path(os.path.expandvars(path))
    if not file.is_file():
        raise ConfigError(f"prompts_file {path}: no such file")
    prompts = []
    for n, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        if file.suffix == ".jsonl":
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{path}, line {n}: invalid JSON ({e.msg})") from None
            if not isinstance(record, dict) or not str(record.get("prompt", "")).strip():
                raise ConfigError(f"{path}, line {n}: expected {{\"prompt\": ..., \"language\": ...}}")
            prompts.append({"prompt": record["prompt"], "language": record.get("language") or
                            script_language(record["prompt"])})
        else:
            prompts.append({"prompt": line.strip(), "language": script_language(line)})
    if not prompts:
        raise ConfigError(f"prompts_file {path}: no prompt in the file")
    return prompts
