"""The text corpus shared by tokenizer training and packing: sources from YAML -> a `text` column, train/validation.

Sources are anything `datasets.load_dataset` reads: local txt / jsonl / json / csv / tsv / parquet files or folders,
or a Hub dataset name (for users with network). Local files are checked line by line first, so a file that is not
UTF-8 or a JSONL line that does not parse stops the run with the file and line, not a stack trace from Arrow.
"""

from __future__ import annotations

import glob
import inspect
import json
import os
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import datasets
from datasets.fingerprint import Hasher

from llm_recipes.config import ConfigError, parse_source_list
from llm_recipes.run_info import REPO_ROOT

# Recipes name the shipped data as ${DATA_DIR}/...; users point DATA_DIR at their own corpus.
os.environ.setdefault("DATA_DIR", str(REPO_ROOT.parent / "shared" / "data"))

# File suffix -> format. TSV is a format of its own (read by the csv builder with a tab), so one source cannot mix
# .tsv and .csv files, and load_files reads it the one way everywhere.
BUILDERS = {".txt": "text", ".jsonl": "json", ".json": "json", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet"}


def load_files(files: list[Path], **kwargs) -> datasets.Dataset:
    """Local files of one format as one dataset. TSV: quotes are text (GLUE's SST-2 and MRPC have unbalanced ones)."""
    builder = BUILDERS[files[0].suffix]
    if builder == "tsv":
        builder, kwargs = "csv", {"sep": "\t", "quoting": 3, **kwargs}  # 3 = csv.QUOTE_NONE
    return datasets.load_dataset(builder, data_files=[str(p) for p in files], split="train", **kwargs)


@dataclass
class TextSource:
    """One corpus source. `path` is a local file / folder / glob (with ${ENV} variables) or a Hub dataset name."""

    path: str
    text_column: str = "text"  # a list of strings in this column (e.g. poem lines) is joined with newlines
    sample_by: str = "line"  # .txt files only: one document per line, per blank-line paragraph, or per file
    name: str | None = None  # Hub dataset config name
    split: str = "train"  # Hub dataset split
    weight: float | None = None  # share of the packed training tokens (make pack), e.g. 0.2 of English replayed

    def __post_init__(self):
        if self.sample_by not in ("line", "paragraph", "document"):
            raise ConfigError(f"source {self.path}: sample_by must be line, paragraph or document, not {self.sample_by!r}")
        number = isinstance(self.weight, (int, float)) and not isinstance(self.weight, bool)
        if self.weight is not None and not (number and self.weight > 0):
            raise ConfigError(f"source {self.path}: weight must be a positive number, got {self.weight!r}")


@dataclass
class CorpusArguments:
    train_sources: list[TextSource] = field(
        default_factory=list,
        metadata={"help": "Training sources: a list of {path, text_column, sample_by, name, split, weight} mappings "
                          "(weight: the source's share of the packed training tokens; set for every source or none)."},
    )
    validation_sources: list[TextSource] = field(
        default_factory=list,
        metadata={"help": "Validation sources; when empty, validation_split_size of the train documents is held out."},
    )
    validation_split_size: float = field(
        default=0.05, metadata={"help": "Share of train documents held out for validation (when no validation_sources)."}
    )
    max_documents: int | None = field(
        default=None, metadata={"help": "Use at most this many training documents (quick runs); None = all."}
    )
    seed: int = field(default=42, metadata={"help": "Seed of the train/validation split."})

    def __post_init__(self):
        for key in ("train_sources", "validation_sources"):
            setattr(self, key, parse_source_list(getattr(self, key), TextSource, key))
        weights = [s.weight for s in self.train_sources]
        if any(w is not None for w in weights) and any(w is None for w in weights):
            raise ConfigError("train_sources: set `weight` for every source of the mixture or for none")
        if any(s.weight is not None for s in self.validation_sources):
            raise ConfigError("validation_sources take no weight: held-out text is scored as it is")
        if not 0 <= self.validation_split_size < 1:
            raise ConfigError(f"validation_split_size must be in [0, 1), got {self.validation_split_size}")

    @property
    def weighted(self) -> bool:
        return bool(self.train_sources) and self.train_sources[0].weight is not None


@dataclass
class CorpusStats:
    documents: int = 0
    empty_documents_skipped: int = 0


def local_files(spec: str, formats: dict[str, str]) -> list[Path] | None:
    """Files of a local source spec (file, folder or glob, with ${ENV} and ~), sorted so the order is stable, keeping
    the suffixes in `formats`; None when the spec names a Hub dataset. Missing, empty or mixed sources are errors."""
    pattern = os.path.expanduser(os.path.expandvars(spec))
    path = Path(pattern)
    looks_local = spec.startswith(("/", ".", "~", "$")) or path.suffix in formats or path.exists()
    if not looks_local:
        return None  # e.g. "HuggingFaceFW/fineweb-edu": load_dataset fetches it (needs network)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in formats and p.is_file())
    elif any(ch in pattern for ch in "*?["):
        files = sorted(p for p in map(Path, glob.glob(pattern, recursive=True)) if p.suffix in formats and p.is_file())
    elif path.is_file():
        files = [path]
    else:
        raise ConfigError(f"source not found: {pattern}")
    if not files:
        raise ConfigError(f"source {pattern} matches no {'/'.join(formats)} file")
    suffixes = sorted({p.suffix for p in files})
    if len({formats.get(s) for s in suffixes}) > 1:
        raise ConfigError(f"source {pattern} mixes file formats {suffixes}; list them as separate sources")
    return files


def resolve_files(source: TextSource) -> list[Path] | None:
    """Local files of a corpus source, or None for a Hub dataset name."""
    return local_files(source.path, BUILDERS)


def checked_lines(path: Path):
    """(line number, text) of a local file, failing with file and line on bytes that are not UTF-8 and, in a .jsonl
    file, on a line that does not parse; JSON Lines come parsed (blank lines skipped, as datasets' reader does)."""
    import orjson  # strict UTF-8 and JSON in one C pass; json and decode below only to say what is wrong

    jsonl = path.suffix == ".jsonl"
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if jsonl and raw.strip():
                try:
                    yield lineno, orjson.loads(raw)
                    continue
                except orjson.JSONDecodeError:
                    pass
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ConfigError(f"{path}, line {lineno}: not UTF-8 text ({e.reason} at byte {e.start})") from None
            if not jsonl:
                yield lineno, line
            elif line.strip():
                try:
                    yield lineno, json.loads(line)
                except json.JSONDecodeError as e:
                    raise ConfigError(f"{path}, line {lineno}: invalid JSON ({e.msg}, column {e.colno})") from None


def check_local_file(path: Path) -> None:
    """Fail with file and line on bytes that are not UTF-8 or JSON that does not parse, and on an empty file."""
    if path.stat().st_size == 0:
        raise ConfigError(f"{path}: empty file (no documents)")
    for _ in checked_lines(path):
        pass
    if path.suffix == ".json":
        try:
            with open(path, encoding="utf-8") as f:
                json.load(f)
        except json.JSONDecodeError as e:
            if e.msg != "Extra data":  # JSON Lines in a .json file: datasets reads those too
                raise ConfigError(f"{path}, line {e.lineno}: invalid JSON ({e.msg}, column {e.colno})") from None


def load_source(source: TextSource) -> datasets.Dataset:
    """One source as a dataset with a single `text` column (empty documents still in: the caller counts them)."""
    files = resolve_files(source)
    if files is None:
        ds = datasets.load_dataset(source.path, source.name, split=source.split)
    else:
        for path in files:
            check_local_file(path)
        ds = load_files(files, **({"sample_by": source.sample_by} if BUILDERS[files[0].suffix] == "text" else {}))
    if source.text_column not in ds.column_names:
        raise ConfigError(
            f"source {source.path}: no column '{source.text_column}' (columns: {', '.join(ds.column_names)}); "
            "set text_column"
        )
    ds = ds.select_columns([source.text_column])
    if source.text_column != "text" or ds.features["text"].dtype != "string":
        ds = ds.map(
            _to_text,
            fn_kwargs={"column": source.text_column},
            remove_columns=ds.column_names,
            new_fingerprint=step_fingerprint(ds, _to_text, source.text_column),
            desc="text",
        )
    return ds


def _to_text(example: dict, column: str) -> dict:
    value = example[column]
    if isinstance(value, list):
        value = "\n".join(str(v) for v in value if v is not None)
    return {"text": "" if value is None else str(value)}


def _is_nonempty(batch: dict) -> list[bool]:
    return [bool(t and t.strip()) for t in batch["text"]]


def load_corpus(args: CorpusArguments) -> tuple[datasets.DatasetDict, dict[str, CorpusStats]]:
    """Train and validation splits with a `text` column (plus `source` for a weighted mixture), empty documents
    removed and counted per split."""
    if not args.train_sources:
        raise ConfigError("train_sources is empty: list at least one source")

    def combine(sources: list[TextSource], tag: bool = False) -> datasets.Dataset:
        parts = [load_source(s) for s in sources]
        if tag:  # a weighted mixture: which source each document came from (its index in train_sources)
            parts = [ds.add_column("source", [i] * len(ds)) for i, ds in enumerate(parts)]
        return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)

    train = combine(args.train_sources, tag=args.weighted)
    if args.max_documents is not None:
        train = train.select(range(min(args.max_documents, len(train))))
    if args.validation_sources:
        splits = datasets.DatasetDict(train=train, validation=combine(args.validation_sources))
    elif args.validation_split_size > 0:
        held_out = train.train_test_split(test_size=args.validation_split_size, seed=args.seed, shuffle=True)
        splits = datasets.DatasetDict(train=held_out["train"], validation=held_out["test"])
    else:
        splits = datasets.DatasetDict(train=train)

    stats = {}
    for name, ds in list(splits.items()):
        kept = ds.filter(
            _is_nonempty,
            batched=True,
            new_fingerprint=step_fingerprint(ds, _is_nonempty),
            desc=f"skip empty documents ({name})",
        )
        stats[name] = CorpusStats(documents=len(kept), empty_documents_skipped=len(ds) - len(kept))
        splits[name] = kept
    return splits, stats


def step_fingerprint(ds: datasets.Dataset, fn, *params) -> str:
    """Cache key of a map step: input fingerprint + the step's source code + its parameters.

    `datasets` pickles a module-level function by reference, so its own fingerprint would not change when the code
    (or a flag the code sets on the tokenizer) changes, and a stale cache would be reused.
    """
    return Hasher.hash([ds._fingerprint, inspect.getsource(fn), *map(str, params)])


def is_cjk(char: str) -> bool:
    return "\u4e00" <= char <= "\u9fff" or "\u3400" <= char <= "\u4dbf" or "\uf900" <= char <= "\ufaff"


def script_language(text: str) -> str:
    """'zh' when most letters are CJK ideographs, else 'en'. A script test, not language ID (that is data_prep's)."""
    letters = [c for c in text if unicodedata.category(c).startswith("L")]
    if not letters:
        return "en"
    return "zh" if sum(map(is_cjk, letters)) / len(letters) > 0.5 else "en"
