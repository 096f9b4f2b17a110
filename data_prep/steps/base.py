"""What every data_prep step shares: YAML parameters checked by name and type, and a run loop that counts.

A step sees one document at a time and either keeps it (possibly rewriting its text) or returns the reason it drops
it. The loop counts documents and characters in and out and every drop by reason (datatrove's stats files, which the
funnel report adds up), each drop and each character a step removed also per source, optionally writes dropped
documents aside with their reason, and turns a document that a cleaning step emptied into a counted drop instead of
an empty record.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from typing import Any, ClassVar

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from llm_recipes.config import ConfigError, type_name, value_fits

STEPS: dict[str, type["DocStep"]] = {}

# Per-source stat keys, `<prefix><source label>[/<reason>]`; the report's funnel per source parses them back. Going
# through datatrove's stats makes them add up over tasks on any executor, like the other counts.
SRC_RECORDS_READ = "src_records_read/"
SRC_CHARS_READ = "src_chars_read/"
SRC_DOCS_DROPPED = "src_docs_dropped/"
SRC_CHARS_DROPPED = "src_chars_dropped/"
SRC_CHARS_REMOVED = "src_chars_removed/"  # net: a placeholder longer than what it replaced counts negative


def count_drop(step: PipelineStep, source: str | None, reason: str, chars: int) -> None:
    """One dropped document with its characters, in the step's drop counts and in its source's."""
    step.stat_update("dropped", f"dropped_{reason}", f"{SRC_DOCS_DROPPED}{source}/{reason}")
    step.stat_update(f"{SRC_CHARS_DROPPED}{source}/{reason}", value=chars)


def register(cls):
    STEPS[cls.step_name] = cls
    return cls


@dataclasses.dataclass
class StepParams:
    """Parameters every step accepts."""

    enabled: bool = dataclasses.field(default=True, metadata={"help": "Switch the step off without deleting it."})
    languages: list[str] | None = dataclasses.field(
        default=None,
        metadata={"help": "Apply only to documents whose detected language is in this list (None = all)."},
    )


class DocStep(PipelineStep):
    """Base of the per-document steps. Subclasses set `step_name`, `Params` and implement `process`."""

    type = "data_prep"
    step_name: ClassVar[str]
    Params: ClassVar[type[StepParams]] = StepParams
    stage: ClassVar[str] = "document"  # or "dedup" / "split": the corpus-wide steps, in the stages after it

    def __init__(self, params: StepParams, dropped_folder: str | None = None, seed: int = 0):
        self.name = self.step_name  # before PipelineStep.__init__, which names the stats after it
        super().__init__()
        self.params = params
        self.seed = seed
        self.dropped_folder = dropped_folder

    def process(self, doc: Document) -> str | None:
        """Rewrite `doc` in place; return None to keep it or a short reason (snake_case) to drop it."""
        raise NotImplementedError

    def applies_to(self, doc: Document) -> bool:
        langs = self.params.languages
        return langs is None or doc.metadata.get("language") in langs

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        writer = None
        if self.dropped_folder:
            from datatrove.pipeline.writers import JsonlWriter

            writer = JsonlWriter(
                f"{self.dropped_folder}/{self.step_name}", output_filename="${rank}.jsonl", compression=None
            )
        try:
            for doc in data:
                self.stat_update("docs_in")
                reason = None
                chars_in = len(doc.text)  # process() rewrites the text in place
                if self.applies_to(doc):
                    with self.track_time():
                        reason = self.process(doc)
                    if reason is None and not doc.text.strip():
                        reason = "empty_after_step"
                if reason is None:
                    chars = len(doc.text)
                    self.stat_update("docs_out")
                    self.stat_update("chars_out", value=chars)
                    if chars != chars_in:
                        self.stat_update(f"{SRC_CHARS_REMOVED}{doc.metadata.get('source')}", value=chars_in - chars)
                    yield doc
                else:
                    # The characters the document came in with: what this step took from its source.
                    count_drop(self, doc.metadata.get("source"), reason, chars_in)
                    if writer is not None:
                        doc.metadata["drop_step"] = self.step_name
                        doc.metadata["drop_reason"] = reason
                        writer.write(doc, rank)
        finally:
            if writer is not None:
                writer.close()


def step_name_of(spec: Any) -> str:
    """The step a YAML entry names: `pii` or `{step: pii, ...}`."""
    return spec if isinstance(spec, str) else spec["step"]


def build_step(index: int, spec: Any, dropped_folder: str | None = None, seed: int = 0) -> DocStep | None:
    """A step from its YAML mapping `{step: name, param: value, ...}`; None when `enabled: false`."""
    params = parse_step_spec(index, spec)
    if not params.enabled:
        return None
    name = spec["step"]
    return STEPS[name](params, dropped_folder=dropped_folder, seed=seed)


def parse_step_spec(index: int, spec: Any) -> StepParams:
    """Check a step mapping against its step's parameters: unknown step or key, or wrong type, is a ConfigError."""
    where = f"steps[{index}]"
    if isinstance(spec, str):
        spec = {"step": spec}
    if not isinstance(spec, dict) or "step" not in spec:
        raise ConfigError(f"{where}: a step is a mapping with a 'step' key, e.g. {{step: pii}}; got {spec!r}")
    name = spec["step"]
    if name not in STEPS:
        hint = difflib.get_close_matches(str(name), STEPS, n=1)
        raise ConfigError(
            f"{where}: unknown step '{name}'" + (f" (did you mean '{hint[0]}'?)" if hint else "")
            + f"; steps: {', '.join(sorted(STEPS))}"
        )
    cls = STEPS[name]
    known = {f.name: f for f in dataclasses.fields(cls.Params)}
    values = {k: v for k, v in spec.items() if k != "step"}
    for key, value in values.items():
        if key not in known:
            hint = difflib.get_close_matches(key, known, n=1)
            raise ConfigError(
                f"{where} ({name}): unknown parameter '{key}'" + (f" (did you mean '{hint[0]}'?)" if hint else "")
                + f"; {name} takes {', '.join(sorted(known))}"
            )
        hint = typing.get_type_hints(cls.Params)[key]
        if not value_fits(value, hint):
            raise ConfigError(f"{where} ({name}): parameter '{key}' has value {value!r}; expected {type_name(hint)}")
    return cls.Params(**values)


def describe_steps() -> str:
    """Every step with its parameters, defaults and help: `python -m data_prep --list_steps`."""
    lines = []
    for name in sorted(STEPS):
        cls = STEPS[name]
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        lines.append(f"{name}: {doc}")
        for f in dataclasses.fields(cls.Params):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            lines.append(f"    {f.name} = {default!r}  # {f.metadata.get('help', '')}")
    return "\n".join(lines)
