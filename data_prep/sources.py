"""Sources from YAML and the reader step that turns them into documents, counting every record it cannot use.

Line-oriented files (.jsonl, .txt) and HTML folders are read here, line by line, so a bad record becomes a counted
drop with its file and line; tabular files (.json arrays, .csv, .tsv, .parquet) and Hub datasets go through HF
`datasets`, which reads them whole. Records are dealt round-robin to the tasks (record i to task i % tasks), so every
task gets a share even of a single big file and the result does not depend on which task is fast.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from llm_recipes.config import ConfigError, parse_source_list
from llm_recipes.corpus import BUILDERS, TextSource, load_files, local_files

from data_prep.steps.base import SRC_CHARS_READ, SRC_RECORDS_READ, count_drop

LINE_FORMATS = {".jsonl": "jsonl", ".txt": "txt", ".html": "html", ".htm": "html"}
TABLE_FORMATS = {s: BUILDERS[s] for s in (".json", ".csv", ".tsv", ".parquet")}
FORMATS = {**LINE_FORMATS, **TABLE_FORMATS}


@dataclass
class SourceSpec(TextSource):
    """A corpus source (path, text_column, sample_by, name, split: the fields and checks the other recipes' sources
    have) plus what data_prep adds: HTML files, a label and a known language."""

    weight: float = 1.0  # share of the train split: 2.0 = each kept train document twice, 0.5 = half of them
    label: str | None = None  # name in the report and in document ids; default: the file or folder name
    language: str | None = None  # ISO 639-1 code when known (no language_id step needed); language_id overrides it

    def __post_init__(self):
        super().__post_init__()
        if self.weight is None:  # allowed in a pack mixture (no weights at all), not here
            raise ConfigError(f"source {self.path}: weight must be a positive number, got None")
        if self.label is None:
            self.label = Path(self.path.rstrip("/*")).name or self.path

    def files(self) -> list[Path] | None:
        """Local files (sorted: a stable order), or None for a Hub dataset. Missing or unreadable paths are errors."""
        files = local_files(self.path, FORMATS)
        if files is None:
            return None
        for p in files:
            if not os.access(p, os.R_OK):
                raise ConfigError(f"source file not readable: {p}")
        return files


def parse_sources(raw) -> list[SourceSpec]:
    parsed = parse_source_list(raw, SourceSpec, "sources")
    labels = [s.label for s in parsed]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"sources: two sources share a label ({labels}); set label: to tell them apart")
    return parsed


def _text_of(value) -> str:
    if isinstance(value, list):
        return "\n".join(str(v) for v in value if v is not None)
    return "" if value is None else str(value)


class SourceReader(PipelineStep):
    """Read every source; yield this task's share of the records; count and log every record it drops. Records,
    characters and drops are also counted per source, the start of the report's funnel per source."""

    type = "data_prep"
    name = "read"

    def __init__(self, sources: list[SourceSpec], bad_records_folder: str, max_logged: int = 1000):
        super().__init__()
        self.sources = sources
        self.bad_records_folder = bad_records_folder
        self.max_logged = max_logged

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        self._bad: list[dict] = []
        counter = 0
        for s_idx, source in enumerate(self.sources):
            files = source.files()
            # Many files: each task reads only its own files (no task reads the whole corpus). Fewer files than tasks:
            # every task walks the records and keeps every world_size-th one, so one big file still spreads out.
            by_file = files is not None and len(files) >= world_size and FORMATS[files[0].suffix] in LINE_FORMATS.values()
            own_files = {i for i in range(len(files)) if i % world_size == rank} if by_file else None
            records_key, chars_key = SRC_RECORDS_READ + source.label, SRC_CHARS_READ + source.label
            for record in self._records(s_idx, source, own_files):
                if not by_file:
                    mine = counter % world_size == rank
                    counter += 1
                    if not mine:
                        continue
                self.stat_update("records_read", records_key)
                kind, where, payload = record
                if kind == "bad":
                    self._drop(source.label, payload, where, chars=0)
                    continue
                text, doc_id, metadata = payload
                self.stat_update(chars_key, value=len(text))
                if not text.strip():
                    self._drop(source.label, "empty_document", where, chars=len(text))
                    continue
                self.stat_update("docs_out")
                self.stat_update("chars_out", value=len(text))
                yield Document(text=text, id=doc_id, metadata=metadata)
        self._write_bad(rank)

    def _drop(self, source: str, reason: str, where: str, chars: int) -> None:
        count_drop(self, source, reason, chars)
        if len(self._bad) < self.max_logged:
            self._bad.append({"where": where, "reason": reason})

    def _write_bad(self, rank: int) -> None:
        out = Path(self.bad_records_folder)
        out.mkdir(parents=True, exist_ok=True)
        with open(out / f"{rank:05d}.jsonl", "w", encoding="utf-8") as f:
            for item in self._bad:
                f.write(json.dumps(item, ensure_ascii=False) + "\n")

    # Each record is ("ok", where, (text, id, metadata)) or ("bad", where, reason); the reader counts both kinds.
    def _records(self, s_idx: int, source: SourceSpec, own_files: set[int] | None = None):
        files = source.files()
        if files is None or FORMATS[files[0].suffix] in TABLE_FORMATS.values():
            yield from self._table_records(s_idx, source, files)
            return
        root = Path(os.path.expandvars(source.path)).parent if len(files) == 1 else None
        for f_idx, path in enumerate(files):
            if own_files is not None and f_idx not in own_files:
                continue
            rel = path.name if root is not None else _relative(path, source)
            fmt = LINE_FORMATS[path.suffix]
            meta = {"source": source.label, "format": "html" if fmt == "html" else "text", "language": source.language}
            if fmt == "html":
                where = str(path)
                try:
                    text = path.read_bytes().decode("utf-8")
                except UnicodeDecodeError as e:
                    yield "bad", where, f"not_utf8_byte_{e.start}"
                    continue
                yield "ok", where, (text, f"{source.label}/{rel}", {**meta, "order": [s_idx, f_idx, 0]})
            elif fmt == "jsonl":
                yield from self._jsonl_records(path, rel, s_idx, f_idx, source, meta)
            else:
                yield from self._txt_records(path, rel, s_idx, f_idx, source, meta)

    def _jsonl_records(self, path, rel, s_idx, f_idx, source, meta):
        with open(path, "rb") as f:
            for lineno, raw in enumerate(f, start=1):
                where = f"{path}:{lineno}"
                if not raw.strip():
                    continue  # a blank line is not a record
                try:
                    obj = json.loads(raw.decode("utf-8"))
                except UnicodeDecodeError:
                    yield "bad", where, "not_utf8"
                    continue
                except json.JSONDecodeError:
                    yield "bad", where, "invalid_json"
                    continue
                if not isinstance(obj, dict) or source.text_column not in obj:
                    yield "bad", where, "missing_text_column"
                    continue
                doc_id = f"{source.label}/{rel}:{lineno}"
                yield "ok", where, (_text_of(obj[source.text_column]), doc_id, {**meta, "order": [s_idx, f_idx, lineno]})

    def _txt_records(self, path, rel, s_idx, f_idx, source, meta):
        def ok(lines: list[str], start: int):
            text = "\n".join(lines)
            return "ok", f"{path}:{start}", (text, f"{source.label}/{rel}:{start}", {**meta, "order": [s_idx, f_idx, start]})

        block: list[str] = []
        start = 1
        with open(path, "rb") as f:
            for lineno, raw in enumerate(f, start=1):
                try:
                    line = raw.decode("utf-8").rstrip("\r\n")
                except UnicodeDecodeError:
                    yield "bad", f"{path}:{lineno}", "not_utf8"
                    continue
                if source.sample_by == "line":
                    if line.strip():
                        yield ok([line], lineno)
                elif source.sample_by == "paragraph" and not line.strip():
                    if block:
                        yield ok(block, start)
                    block = []
                else:
                    if not block:
                        start = lineno
                    block.append(line)
        if block:
            yield ok(block, start)

    def _table_records(self, s_idx, source, files):
        import datasets

        if files is None:
            ds = datasets.load_dataset(source.path, source.name, split=source.split)
            rel = f"{source.split}"
        else:
            try:
                ds = load_files(files)
            except Exception as e:  # noqa: BLE001 - Arrow's errors name neither file nor row: add the file
                raise ConfigError(f"source {source.path}: cannot read it as {TABLE_FORMATS[files[0].suffix]} "
                                  f"({type(e).__name__}: {e})") from e
            rel = files[0].name if len(files) == 1 else _relative(files[0].parent, source)
        if source.text_column not in ds.column_names:
            raise ConfigError(f"source {source.path}: no column '{source.text_column}' (columns: {ds.column_names})")
        meta = {"source": source.label, "format": "text", "language": source.language}
        for row, value in enumerate(ds[source.text_column]):
            where = f"{source.path}#row{row}"
            yield "ok", where, (_text_of(value), f"{source.label}/{rel}#{row}", {**meta, "order": [s_idx, 0, row]})


def _relative(path: Path, source: SourceSpec) -> str:
    base = Path(os.path.expandvars(source.path.split("*")[0]))
    try:
        return str(path.relative_to(base if base.is_dir() else base.parent))
    except ValueError:
        return path.name
