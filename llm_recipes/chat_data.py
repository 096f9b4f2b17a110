"""Chat data for SFT and preference tuning: a mixture of sources in any common format, converted once.

SFT (`task="sft"`) gives one conversational `messages` column. Formats (converted with `datasets.map`, one record at
a time, keeping the record's index in its source):

- `alpaca`: {instruction, input, output} (+ optional `system`); instruction and input become the user turn.
- `sharegpt`: {conversations: [{from, value}]} with roles human / gpt / system (+ optional `system` column).
- `messages`: OpenAI-style {messages: [{role, content}]} with roles system / user / assistant.
- `prompt_completion`: {prompt, completion}, as strings (one user and one assistant turn) or as message lists.
- `self_instruct`: {instruction, instances: [{input, output}]} (Stanford Alpaca / BELLE seed tasks): one conversation
  per instance.
- `auto`: picked from the columns.

Preference pairs (`task="preference"`, for DPO) give TRL's conversational `prompt` / `chosen` / `rejected` columns
(message lists; the prompt may hold many turns and ends with a user turn, chosen and rejected hold the answers):

- `preference`: TRL's {prompt, chosen, rejected}, as strings or message lists; without `prompt`, chosen and rejected
  are whole conversations and their shared first turns become the prompt.
- `sharegpt`: {conversations: [{from, value}], chosen: {from, value}, rejected: {from, value}} (LLaMA-Factory's
  dpo_*_demo; chosen / rejected may also be strings or lists of turns).
- `alpaca`: {instruction, input, chosen, rejected} (+ optional `system`).

A pair whose chosen or rejected answer is empty, or whose answers are the same text, is invalid.

A record with an unknown role, an empty assistant turn or a missing field is invalid. Invalid records are dropped and
counted per source (the recipe writes the counts to its run log and `data_report.json`), with the first few named by
file and record index; when more than `max_invalid_share` of a source is invalid the run stops with that list instead.
Nothing is dropped silently.

Mixtures follow TRL's `DatasetMixtureConfig` (path / name / data_files / split / fraction per source), plus `format`,
`max_samples`, and a seeded per-source train/test split (TRL's `get_dataset` splits without a seed).
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field
from collections.abc import Callable
from typing import Any

import datasets

from llm_recipes.config import ConfigError, parse_source_list
from llm_recipes.corpus import TextSource, check_local_file, load_files, resolve_files

# Tokenizer arguments for counting lengths: transformers' "longer than the model's maximum" warning is noise there
COUNT_ONLY = {"verbose": False}


def prompt_tokens(tokenizer, messages: list[dict]) -> int:
    """Length of a conversation rendered through the chat template as a prompt (the generation prompt included)."""
    return len(tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=False,
                                             tokenizer_kwargs=COUNT_ONLY))

logger = logging.getLogger(__name__)

# ShareGPT speaker names -> chat roles. Anything else (e.g. "bot", "observation", "function") is an unknown role.
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
CHAT_ROLES = ("system", "user", "assistant")
ERRORS_SHOWN = 5  # invalid records named in a message; the rest are counted


@dataclass
class ChatSource:
    """One source of a mixture (the fields of TRL's `DatasetConfig`, plus `format` and `max_samples`)."""

    path: str  # local file / folder / glob (${DATA_DIR} expands) or a Hub dataset name
    format: str = "auto"
    name: str | None = None  # Hub dataset config name
    data_dir: str | None = None
    data_files: Any = None  # for builder names such as `json`; local paths expand ${ENV}
    split: str = "train"
    fraction: float | None = None  # target share of the mixture (TRL semantics: normalised, never oversampled)
    max_samples: int | None = None  # keep at most this many valid records (seeded shuffle first)

    def __post_init__(self):
        if self.format not in FORMATS:
            raise ConfigError(f"source {self.path}: format must be one of {', '.join(FORMATS)}, not {self.format!r}")
        if self.fraction is not None and not self.fraction > 0:
            raise ConfigError(f"source {self.path}: fraction must be > 0, got {self.fraction}")
        if self.max_samples is not None and self.max_samples < 1:
            raise ConfigError(f"source {self.path}: max_samples must be >= 1, got {self.max_samples}")


@dataclass
class ChatDataArguments:
    datasets: list[ChatSource] = field(
        default_factory=list,
        metadata={"help": "The data mixture: a list of {path, format, name, data_dir, data_files, split, fraction, "
                          "max_samples} mappings (format for SFT: auto, alpaca, sharegpt, messages, prompt_completion, "
                          "self_instruct; for DPO: auto, preference, sharegpt, alpaca; fraction: share of the "
                          "mixture, set for all or none)."},
    )
    test_split_size: float = field(
        default=0.05,
        metadata={"help": "Held-out evaluation share of every source (< 1), or a record count per source (>= 1); "
                          "0 = no eval split. Seeded with data_seed (or seed)."},
    )
    max_invalid_share: float = field(
        default=0.01,
        metadata={"help": "Stop when more than this share of a source's records is invalid (unknown role, empty "
                          "assistant turn, missing field); below it, invalid records are dropped and counted."},
    )

    def __post_init__(self):
        parsed = self.datasets = parse_source_list(self.datasets, ChatSource, "datasets")
        fractions = [s.fraction for s in parsed]
        if any(f is not None for f in fractions) and any(f is None for f in fractions):
            raise ConfigError("datasets: set `fraction` for every source of the mixture or for none")
        if self.test_split_size < 0:
            raise ConfigError(f"test_split_size must be >= 0, got {self.test_split_size}")
        if not 0 <= self.max_invalid_share < 1:
            raise ConfigError(f"max_invalid_share must be in [0, 1), got {self.max_invalid_share}")


# --- one record -> messages -------------------------------------------------------------------------------------------


class InvalidRecord(ValueError):
    pass


def _text(record: dict, key: str, required: bool = True) -> str:
    value = record.get(key)
    if value is None:
        if required:
            raise InvalidRecord(f"missing field '{key}'")
        return ""
    if not isinstance(value, str):
        raise InvalidRecord(f"field '{key}' is {type(value).__name__}, expected text")
    return value


def _check(messages: list[dict]) -> list[dict]:
    if not messages:
        raise InvalidRecord("no messages")
    for i, m in enumerate(messages):
        if m["role"] not in CHAT_ROLES:
            raise InvalidRecord(f"message {i}: unknown role {m['role']!r}")
        if not isinstance(m["content"], str):
            raise InvalidRecord(f"message {i}: content is {type(m['content']).__name__}, expected text")
        if m["role"] == "assistant" and not m["content"].strip():
            raise InvalidRecord(f"message {i}: empty assistant turn")
        if m["role"] == "user" and not m["content"].strip():
            raise InvalidRecord(f"message {i}: empty user turn")
    if not any(m["role"] == "assistant" for m in messages):
        raise InvalidRecord("no assistant turn")
    return messages


def _with_system(record: dict, messages: list[dict]) -> list[dict]:
    system = record.get("system")
    if isinstance(system, str) and system.strip() and not (messages and messages[0]["role"] == "system"):
        return [{"role": "system", "content": system}, *messages]
    return messages


def _user_prompt(instruction: str, extra: str) -> str:
    return f"{instruction}\n\n{extra}" if extra.strip() else instruction


def alpaca_to_messages(record: dict) -> list[dict]:
    instruction = _text(record, "instruction")
    if not instruction.strip():
        raise InvalidRecord("empty field 'instruction'")
    user = _user_prompt(instruction, _text(record, "input", required=False))
    output = _text(record, "output")
    return _check(_with_system(record, [{"role": "user", "content": user}, {"role": "assistant", "content": output}]))


def _turns(record: dict, key: str, role_key: str, content_key: str, roles: dict[str, str] | None) -> list[dict]:
    turns = record.get(key)
    if turns is None:
        raise InvalidRecord(f"missing field '{key}'")
    if not isinstance(turns, list):
        raise InvalidRecord(f"field '{key}' is {type(turns).__name__}, expected a list of turns")
    messages = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict) or turn.get(role_key) is None or turn.get(content_key) is None:
            raise InvalidRecord(f"{key}[{i}]: missing '{role_key}' or '{content_key}'")
        role = turn[role_key]
        if roles is not None:
            if role not in roles:
                raise InvalidRecord(f"{key}[{i}]: unknown role {role!r}")
            role = roles[role]
        messages.append({"role": role, "content": turn[content_key]})
    return messages


def sharegpt_to_messages(record: dict) -> list[dict]:
    return _check(_with_system(record, _turns(record, "conversations", "from", "value", SHAREGPT_ROLES)))


def openai_to_messages(record: dict) -> list[dict]:
    return _check(_turns(record, "messages", "role", "content", None))


def prompt_completion_to_messages(record: dict) -> list[dict]:
    prompt, completion = record.get("prompt"), record.get("completion")
    if prompt is None or completion is None:
        raise InvalidRecord(f"missing field '{'prompt' if prompt is None else 'completion'}'")
    if isinstance(prompt, list) and isinstance(completion, list):  # conversational prompt-completion
        messages = (_turns(record, "prompt", "role", "content", None)
                    + _turns(record, "completion", "role", "content", None))
        if not all(m["role"] == "assistant" for m in messages[len(prompt):]):
            raise InvalidRecord("completion holds a non-assistant turn")
        return _check(messages)
    messages = [{"role": "user", "content": _text(record, "prompt")},
                {"role": "assistant", "content": _text(record, "completion")}]
    return _check(_with_system(record, messages))


def self_instruct_to_messages(record: dict) -> list[list[dict]]:
    instruction = _text(record, "instruction")
    instances = record.get("instances")
    if not isinstance(instances, list) or not instances:
        raise InvalidRecord("missing field 'instances'")
    out = []
    for i, inst in enumerate(instances):
        if not isinstance(inst, dict):
            raise InvalidRecord(f"instances[{i}] is not a mapping")
        try:
            out.append(alpaca_to_messages(
                {"instruction": instruction, "input": inst.get("input"), "output": inst.get("output")}))
        except InvalidRecord as e:
            raise InvalidRecord(f"instances[{i}]: {e}") from None
    return out


# --- one record -> a preference pair ---------------------------------------------------------------------------------


def _turn(turn: Any, where: str) -> dict:
    """One turn as {role, content}, from OpenAI ({role, content}) or ShareGPT ({from, value}) keys."""
    if not isinstance(turn, dict):
        raise InvalidRecord(f"{where} is {type(turn).__name__}, expected a turn mapping")
    # datasets fills keys a row lacks with None, so a column may carry both spellings
    role = turn.get("role") if turn.get("role") is not None else turn.get("from")
    content = turn.get("content") if turn.get("content") is not None else turn.get("value")
    if role is None or content is None:
        raise InvalidRecord(f"{where}: missing 'role'/'content' (or 'from'/'value')")
    if role not in SHAREGPT_ROLES:
        raise InvalidRecord(f"{where}: unknown role {role!r}")
    if not isinstance(content, str):
        raise InvalidRecord(f"{where}: content is {type(content).__name__}, expected text")
    return {"role": SHAREGPT_ROLES[role], "content": content}


def _turn_list(value: Any, key: str, default_role: str) -> list[dict]:
    """A string (one turn of `default_role`), one turn mapping, or a list of turns."""
    if value is None:
        raise InvalidRecord(f"missing field '{key}'")
    if isinstance(value, str):
        return [{"role": default_role, "content": value}]
    if isinstance(value, dict):
        return [_turn(value, key)]
    if isinstance(value, list):
        return [_turn(t, f"{key}[{i}]") for i, t in enumerate(value)]
    raise InvalidRecord(f"field '{key}' is {type(value).__name__}, expected text or turns")


def _answer(turns: list[dict], key: str) -> list[dict]:
    if not turns or any(t["role"] != "assistant" for t in turns):
        raise InvalidRecord(f"'{key}' must hold assistant turns only")
    if not "".join(t["content"] for t in turns).strip():
        raise InvalidRecord(f"empty '{key}' answer")
    return turns


def _pair(record: dict, prompt: list[dict], chosen: list[dict], rejected: list[dict]) -> list[dict]:
    prompt = _with_system(record, prompt)
    if not prompt or prompt[-1]["role"] != "user":
        raise InvalidRecord("the prompt must end with a user turn")
    for i, m in enumerate(prompt):
        if m["role"] != "system" and not m["content"].strip():
            raise InvalidRecord(f"prompt turn {i}: empty {m['role']} turn")
    chosen, rejected = _answer(chosen, "chosen"), _answer(rejected, "rejected")
    if [t["content"].strip() for t in chosen] == [t["content"].strip() for t in rejected]:
        raise InvalidRecord("chosen and rejected are the same answer")
    return [{"prompt": prompt, "chosen": chosen, "rejected": rejected}]


def preference_to_pair(record: dict) -> list[dict]:
    """TRL's shape: an explicit prompt and the answers, or two whole conversations whose shared first turns are the
    prompt (then a `prompt` column beside them, as in HuggingFaceH4/ultrafeedback_binarized, is a copy and unused)."""
    chosen = _turn_list(record.get("chosen"), "chosen", "assistant")
    rejected = _turn_list(record.get("rejected"), "rejected", "assistant")
    whole = any(t["role"] != "assistant" for t in chosen + rejected)
    if not whole:
        return _pair(record, _turn_list(record.get("prompt"), "prompt", "user"), chosen, rejected)
    shared = 0
    while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
        shared += 1
    while shared and chosen[shared - 1]["role"] == "assistant":  # the answers start after the last shared user turn
        shared -= 1
    return _pair(record, chosen[:shared], chosen[shared:], rejected[shared:])


def sharegpt_to_pair(record: dict) -> list[dict]:
    return _pair(record, _turn_list(record.get("conversations"), "conversations", "user"),
                 _turn_list(record.get("chosen"), "chosen", "assistant"),
                 _turn_list(record.get("rejected"), "rejected", "assistant"))


def alpaca_to_pair(record: dict) -> list[dict]:
    instruction = _text(record, "instruction")
    if not instruction.strip():
        raise InvalidRecord("empty field 'instruction'")
    user = _user_prompt(instruction, _text(record, "input", required=False))
    return _pair(record, [{"role": "user", "content": user}],
                 _turn_list(_text(record, "chosen"), "chosen", "assistant"),
                 _turn_list(_text(record, "rejected"), "rejected", "assistant"))


# --- formats per task, and the conversion of a whole source -----------------------------------------------------------

MESSAGES = [{"role": datasets.Value("string"), "content": datasets.Value("string")}]


@dataclass(frozen=True)
class Task:
    """What a recipe trains on: the columns a record becomes and, per format, the converter (record -> rows)."""

    name: str
    columns: tuple[str, ...]
    converters: dict[str, Callable[[dict], list[dict]]]
    detect: Callable[[set[str]], str | None]

    @property
    def formats(self) -> tuple[str, ...]:
        return ("auto", *self.converters)


def _detect_sft(cols: set[str]) -> str | None:
    if "conversations" in cols:
        return "sharegpt"
    if "messages" in cols:
        return "messages"
    if "instances" in cols and "instruction" in cols:
        return "self_instruct"
    if "instruction" in cols:
        return "alpaca"
    if "prompt" in cols and "completion" in cols:
        return "prompt_completion"
    return None


def _detect_preference(cols: set[str]) -> str | None:
    if not {"chosen", "rejected"} <= cols:
        return None
    return "sharegpt" if "conversations" in cols else "alpaca" if "instruction" in cols else "preference"


SFT = Task("sft", ("messages",), {
    "alpaca": lambda r: [{"messages": alpaca_to_messages(r)}],
    "sharegpt": lambda r: [{"messages": sharegpt_to_messages(r)}],
    "messages": lambda r: [{"messages": openai_to_messages(r)}],
    "prompt_completion": lambda r: [{"messages": prompt_completion_to_messages(r)}],
    "self_instruct": lambda r: [{"messages": m} for m in self_instruct_to_messages(r)],
}, _detect_sft)
PREFERENCE = Task("preference", ("prompt", "chosen", "rejected"), {
    "preference": preference_to_pair, "sharegpt": sharegpt_to_pair, "alpaca": alpaca_to_pair,
}, _detect_preference)
TASKS = {t.name: t for t in (SFT, PREFERENCE)}
FORMATS = tuple(dict.fromkeys(f for task in TASKS.values() for f in task.formats))  # what a source may name


def detect_format(columns: list[str], where: str, task: Task = SFT) -> str:
    fmt = task.detect(set(columns))
    if fmt is None:
        raise ConfigError(f"{where}: cannot tell the {task.name} format from columns {sorted(columns)}; set "
                          f"`format:` ({', '.join(task.formats[1:])})")
    return fmt


def _convert_batch(batch: dict[str, list], indices: list[int], fmt: str, task: str) -> dict[str, list]:
    """Batched map: one output row per converted row, with the source record index and the error (None if valid)."""
    task_ = TASKS[task]
    keys = list(batch)
    out: dict[str, list] = {c: [] for c in (*task_.columns, "record_index", "error")}
    for row, index in enumerate(indices):
        record = {k: batch[k][row] for k in keys}
        try:
            rows, error = task_.converters[fmt](record), None
        except InvalidRecord as e:
            rows, error = [{c: [] for c in task_.columns}], str(e)
        for converted in rows:
            for column in task_.columns:
                out[column].append(converted[column])
            out["record_index"].append(index)
            out["error"].append(error)
    return out


def convert(ds: datasets.Dataset, fmt: str = "auto", where: str = "dataset", task: Task = SFT) -> datasets.Dataset:
    """Convert a raw dataset to the task's columns + `record_index`, `error` (invalid records kept, marked)."""
    if fmt == "auto":
        fmt = detect_format(ds.column_names, where, task)
    if fmt not in task.converters:
        raise ConfigError(f"{where}: format {fmt!r} is not a {task.name} format ({', '.join(task.formats)})")
    features = {c: MESSAGES for c in task.columns}
    return ds.map(
        _convert_batch, batched=True, with_indices=True, fn_kwargs={"fmt": fmt, "task": task.name},
        remove_columns=ds.column_names, desc=f"{fmt} -> {task.name}",
        features=datasets.Features({**features, "record_index": datasets.Value("int64"),
                                    "error": datasets.Value("string")}),
    )


def to_messages(ds: datasets.Dataset, fmt: str = "auto", where: str = "dataset") -> datasets.Dataset:
    """SFT conversion: columns `messages`, `record_index`, `error`."""
    return convert(ds, fmt, where, SFT)


# --- sources and the mixture ------------------------------------------------------------------------------------------


@dataclass
class SourceReport:
    source: str
    format: str
    records: int = 0
    invalid: int = 0
    conversations: int = 0  # valid conversations (self_instruct: one per instance) or preference pairs
    used: int = 0  # after max_samples / fraction
    train: int = 0
    test: int = 0
    too_long: int = 0  # dropped by drop_too_long: over max_length tokens through the chat template
    invalid_examples: list[str] = field(default_factory=list)


def load_raw(source: ChatSource) -> tuple[datasets.Dataset, str]:
    """The source as `datasets` reads it, and a human name for messages (the file path when there is one file)."""
    data_files = source.data_files
    if data_files is not None:
        expand = lambda p: os.path.expanduser(os.path.expandvars(p))  # noqa: E731
        data_files = [expand(p) for p in data_files] if isinstance(data_files, list) else (
            {k: expand(v) for k, v in data_files.items()} if isinstance(data_files, dict) else expand(data_files))
        return datasets.load_dataset(source.path, source.name, data_dir=source.data_dir, data_files=data_files,
                                     split=source.split), str(data_files)
    files = resolve_files(TextSource(path=source.path))
    if files is None:  # a Hub dataset (needs network, or the local cache)
        ds = datasets.load_dataset(source.path, source.name, data_dir=source.data_dir, split=source.split)
        return ds, source.path
    for path in files:
        check_local_file(path)  # not UTF-8 / broken JSON -> file and line, not an Arrow stack trace
    ds = load_files(files)
    return ds, str(files[0]) if len(files) == 1 else os.path.expandvars(source.path)


def load_source(source: ChatSource, max_invalid_share: float, seed: int,
                task: Task = SFT) -> tuple[datasets.Dataset, SourceReport]:
    """One source as the task's valid rows (plus `source`), invalid records counted; ConfigError above the threshold."""
    try:
        raw, where = load_raw(source)
    except (FileNotFoundError, datasets.exceptions.DatasetNotFoundError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"source {source.path}: cannot load ({e})") from None
    fmt = detect_format(raw.column_names, where, task) if source.format == "auto" else source.format
    report = SourceReport(source=where, format=fmt, records=len(raw))
    converted = convert(raw, fmt, where, task)
    bad = converted.filter(lambda e: e is not None, input_columns="error")
    bad_records = sorted(set(zip(bad["record_index"], bad["error"])))
    report.invalid = len({i for i, _ in bad_records})
    report.invalid_examples = [f"{where}, record {i}: {err}" for i, err in bad_records[:ERRORS_SHOWN]]
    share = report.invalid / max(report.records, 1)
    if share > max_invalid_share:
        more = f" (+{report.invalid - ERRORS_SHOWN} more)" if report.invalid > ERRORS_SHOWN else ""
        raise ConfigError(
            f"{where}: {report.invalid} of {report.records} records invalid ({share:.1%} > max_invalid_share "
            f"{max_invalid_share:.1%}): " + "; ".join(e.split(", ", 1)[1] for e in report.invalid_examples) + more
        )
    if report.invalid:
        logger.warning("%s: dropped %d invalid of %d records (%.2f%%), e.g. %s", where, report.invalid,
                       report.records, 100 * share, "; ".join(report.invalid_examples))
    valid = converted.filter(lambda e: e is None, input_columns="error").remove_columns("error")
    report.conversations = len(valid)
    valid = valid.add_column("source", [where] * len(valid))
    if source.max_samples is not None and source.max_samples < len(valid):
        valid = valid.shuffle(seed=seed).select(range(source.max_samples))
    return valid, report


def split_source(
    ds: datasets.Dataset, test_split_size: float, seed: int
) -> tuple[datasets.Dataset, datasets.Dataset | None]:
    size = int(test_split_size) if test_split_size >= 1 else test_split_size
    if not test_split_size or (size if isinstance(size, int) else round(size * len(ds))) < 1 or len(ds) < 2:
        return ds.shuffle(seed=seed), None
    parts = ds.train_test_split(test_size=size, seed=seed, shuffle=True)
    return parts["train"], parts["test"]


def load_mixture(args: ChatDataArguments, seed: int,
                 task: Task = SFT) -> tuple[datasets.DatasetDict, list[SourceReport]]:
    """The mixture as DatasetDict(train[, test]) of `messages` (+ `source`, `record_index`) and one report per source.

    Each source is converted, checked, sampled (max_samples), split (seeded, so its test part holds instructions the
    model never trains on), then the train parts are mixed by `fraction` and everything is shuffled with `seed`.
    """
    if not args.datasets:
        raise ConfigError("no datasets: list the instruction sources under `datasets:`")
    trains, tests, reports = [], [], []
    for source in args.datasets:
        ds, report = load_source(source, args.max_invalid_share, seed, task)
        train, test = split_source(ds, args.test_split_size, seed)
        trains.append(train)
        if test is not None:
            tests.append(test)
            report.test = len(test)
        reports.append(report)
    fractions = [s.fraction for s in args.datasets]
    if fractions[0] is not None:  # TRL's rule: shares normalised, mixture as large as possible without oversampling
        weights = [f / sum(fractions) for f in fractions]
        total = min(len(t) / w for t, w in zip(trains, weights))
        trains = [t.select(range(round(w * total))) for t, w in zip(trains, weights)]  # already shuffled by the split
    for report, train in zip(reports, trains):
        report.train = len(train)
        report.used = report.train + report.test
    out = {"train": datasets.concatenate_datasets(trains).shuffle(seed=seed)}
    if tests:
        out["test"] = datasets.concatenate_datasets(tests)
    if len(out["train"]) == 0:
        raise ConfigError(f"the mixture has no training {'pairs' if task is PREFERENCE else 'conversations'}")
    return datasets.DatasetDict(out), reports


def drop_too_long(data: datasets.DatasetDict, tokenizer, max_length: int,
                  reports: list[SourceReport]) -> datasets.DatasetDict:
    """Conversations longer than `max_length` tokens (chat template applied) dropped, counted per source and split.

    The alternative, TRL's truncation, keeps the start of a long conversation and cuts its end: the model then learns
    answers that never reach their end-of-turn token, which a small model repeats as answers that never stop.
    """
    by_source = {r.source: r for r in reports}
    out = {}
    for split, ds in data.items():
        lengths = ds.map(lambda b: {"n": [len(ids) for ids in tokenizer.apply_chat_template(
            b["messages"], tokenize=True, return_dict=True, tokenizer_kwargs=COUNT_ONLY)["input_ids"]]}, batched=True,
            remove_columns=ds.column_names, desc=f"lengths ({split})")["n"]
        keep = [i for i, n in enumerate(lengths) if n <= max_length]
        for source, n in zip(ds["source"], lengths):
            if n > max_length:
                by_source[source].too_long += 1
                setattr(by_source[source], split, getattr(by_source[source], split) - 1)
        out[split] = ds.select(keep)
    if not len(out["train"]):
        raise ConfigError(f"every training conversation is longer than max_length {max_length}")
    return datasets.DatasetDict(out)


def report_dict(reports: list[SourceReport]) -> dict[str, Any]:
    return {
        "sources": [asdict(r) for r in reports],
        "records": sum(r.records for r in reports),
        "invalid_dropped": sum(r.invalid for r in reports),
        "too_long_dropped": sum(r.too_long for r in reports),
        "train": sum(r.train for r in reports),
        "test": sum(r.test for r in reports),
    }
