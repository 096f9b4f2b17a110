"""One config system for every recipe: a YAML file (`--config path.yaml`) plus CLI overrides of any key.

Built on TRL's `TrlParser` (the convention of `trl sft` and alignment-handbook). What we add is strictness: a YAML key
that no dataclass field knows, a CLI flag nobody consumes, or a YAML value of the wrong type stops the run with one
argparse-style error (exit code 2) that names the key and the file, instead of a stack trace or a silent default.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import enum
import json
import os
import sys
import types
import typing
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import yaml
from trl import TrlParser


class ConfigError(ValueError):
    """A config problem found after parsing (e.g. an incomplete model shape): entry points turn it into a usage error."""


class RecipeParser(TrlParser):
    """`TrlParser` with strict checking of YAML keys, YAML value types and leftover CLI flags."""

    def __init__(self, dataclass_types=None, **kwargs):
        # argparse would otherwise accept `--num_gpu` as an abbreviation of `--num_gpus`: a typo must be an error.
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(dataclass_types, **kwargs)
        # A list-of-sources field (datasets, lm_sets, ...) takes a path per item on the command line; a JSON object
        # gives an item its other keys too: --lm_sets '{"path": "a", "language": "en"}' '{"path": "b", ...}'.
        for action in self._actions:
            if dataclasses.is_dataclass(action.type):
                action.type = _source_from_cli(action.type)

    def error(self, message: str):
        # One line naming the problem; the full usage is one `--help` away.
        self.exit(2, f"{self.prog}: error: {message}\n(run with --help for all keys)\n")

    def parse(self, args: Sequence[str] | None = None) -> tuple[Any, ...]:
        """Parse `--config file.yaml` (optional) and CLI flags into the parser's dataclasses."""
        args = list(sys.argv[1:] if args is None else args)
        config_path = self._config_path(args)
        if config_path is not None:
            self._check_config_file(config_path)
        try:
            *dataclasses_, leftover = self.parse_args_and_config(args, return_remaining_strings=True)
        except ValueError as e:  # raised by a dataclass's __post_init__ (ConfigError is one): a config mistake
            source = f"{config_path}: " if config_path else ""
            self.error(source + "; ".join(line.strip("- ") for line in str(e).splitlines() if line.strip()))
        if leftover:
            self._fail_unknown([a for a in leftover if a.startswith("--")] or leftover, where="command line")
        return tuple(dataclasses_)

    # --- checks -------------------------------------------------------------------------------------------------------

    def _config_path(self, args: list[str]) -> str | None:
        for i, arg in enumerate(args):
            if arg.startswith("--config="):
                # TrlParser only understands the two-token form.
                args[i : i + 1] = ["--config", arg.split("=", 1)[1]]
                return args[i + 1]
            if arg == "--config":
                if i + 1 >= len(args):
                    self.error("--config needs a path to a YAML file")
                return args[i + 1]
        return None

    def _check_config_file(self, path: str) -> None:
        if not os.path.isfile(path):
            self.error(f"config file not found: {path}")
        try:
            with open(path, encoding="utf-8") as f:
                config = yaml.safe_load(f)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f"{path}, line {mark.line + 1}" if mark else path
            self.error(f"{where}: invalid YAML: {getattr(e, 'problem', e)}")
        except UnicodeDecodeError as e:
            self.error(f"{path}: not UTF-8 text ({e})")
        if config is None:
            config = {}
        if not isinstance(config, dict):
            self.error(f"{path}: a config file must be a YAML mapping of key: value, got {type(config).__name__}")
        known = {action.dest for action in self._actions}
        unknown = [k for k in config if k not in known and k != "env"]
        if unknown:
            self._fail_unknown(unknown, where=path)
        # argparse converts CLI strings, but YAML values become defaults as they are: check them against the fields.
        hints = self._field_types()
        for key, value in config.items():
            if value is None or key not in hints:  # null leaves the field to its own default and checks
                continue
            hint, choices = hints[key]
            if not value_fits(value, hint, choices):
                self.error(f"{path}: key '{key}' has value {value!r} ({type(value).__name__}); "
                           f"expected {type_name(hint, choices)}")

    def _field_types(self) -> dict[str, tuple[Any, Sequence | None]]:
        out = {}
        for dtype in self.dataclass_types:
            try:
                resolved = typing.get_type_hints(dtype)
            except Exception:  # noqa: BLE001 - an annotation that does not resolve is left unchecked, as argparse does
                resolved = {}
            for f in dataclasses.fields(dtype):
                if f.init:
                    out.setdefault(f.name, (resolved.get(f.name, Any), f.metadata.get("choices")))
        return out

    def _fail_unknown(self, keys: Iterable[str], where: str) -> None:
        known = [a.dest for a in self._actions if a.dest != "help"]
        parts = []
        for key in keys:
            hint = difflib.get_close_matches(key.lstrip("-"), known, n=1)
            parts.append(f"'{key}'" + (f" (did you mean '{hint[0]}'?)" if hint else ""))
        self.error(f"{where}: unknown key {', '.join(parts)}")


def parse_source_list(value: Any, source_cls: type, key: str) -> list:
    """YAML source lists (`- path` or `- {path: ..., other_key: ...}`) -> dataclass instances, unknown keys refused."""
    known = {f.name for f in dataclasses.fields(source_cls)}
    items = [value] if isinstance(value, (str, dict)) else list(value or [])
    parsed = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            item = {"path": item}
        if isinstance(item, dict):
            unknown = set(item) - known
            if unknown or "path" not in item:
                problem = f"unknown key(s) {sorted(unknown)}" if unknown else "missing 'path'"
                raise ConfigError(f"{key}[{i}]: {problem}; a source has keys {sorted(known)}")
            item = source_cls(**item)
        elif not isinstance(item, source_cls):
            raise ConfigError(f"{key}[{i}]: expected a path or a mapping with 'path', got {item!r}")
        parsed.append(item)
    return parsed


def _source_from_cli(source_cls: type) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        if not text.lstrip().startswith("{"):
            return source_cls(text)
        try:
            item = json.loads(text)
        except json.JSONDecodeError as e:
            raise argparse.ArgumentTypeError(f"not a JSON object ({e.msg}): {text}") from None
        try:
            return parse_source_list([item], source_cls, "item")[0]
        except ValueError as e:  # argparse shows an ArgumentTypeError's text, but only "invalid value" for others
            raise argparse.ArgumentTypeError(str(e)) from None

    convert.__name__ = source_cls.__name__  # argparse names the type in its error line
    return convert


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, enum.Enum) else value


_BOOL_WORDS = {"true", "false", "yes", "no", "1", "0"}


def _is_enum(hint: Any) -> bool:
    return isinstance(hint, type) and issubclass(hint, enum.Enum)


def _union_args(hint: Any) -> tuple:
    """The members of a Union as HfArgumentParser reads them: Union[SomeEnum, str] is SomeEnum (its choices)."""
    args = typing.get_args(hint)
    return tuple(a for a in args if a is not str) if str in args and any(map(_is_enum, args)) else args


def value_fits(value: Any, hint: Any, choices: Sequence | None = None) -> bool:
    """Whether a YAML value fits a dataclass field's type (and its `choices`, when the field lists them): the one check
    of YAML values, for recipe configs and for data_prep's step parameters. Like argparse on the command line, a string
    that converts counts for int, float and bool (YAML reads 5e-5 as a string)."""
    if choices is not None:
        return str(_plain(value)) in {str(_plain(c)) for c in choices}
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(value_fits(value, a) for a in _union_args(hint))
    if value is None or hint is type(None):
        return value is None and hint in (type(None), Any)
    if origin is typing.Literal:
        return str(_plain(value)) in {str(_plain(a)) for a in typing.get_args(hint)}
    if _is_enum(hint):
        return str(_plain(value)) in {str(m.value) for m in hint}
    if hint is bool:
        return isinstance(value, bool) or (isinstance(value, str) and value.lower() in _BOOL_WORDS)
    if hint in (int, float):
        number = isinstance(value, int if hint is int else (int, float)) and not isinstance(value, bool)
        return number or (isinstance(value, str) and _converts(hint, value))
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple):
        args = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(value_fits(v, a) for v, a in zip(value, args))
        return not args or all(value_fits(v, args[0]) for v in value)
    if origin is dict:
        kt, vt = typing.get_args(hint) or (Any, Any)
        return isinstance(value, dict) and all(value_fits(k, kt) and value_fits(v, vt) for k, v in value.items())
    if dataclasses.is_dataclass(hint):
        return isinstance(value, (dict, str, hint))  # a source given as a mapping or a bare path
    return True


def type_name(hint: Any, choices: Sequence | None = None) -> str:
    if choices is not None:
        return "one of " + ", ".join(str(_plain(c)) for c in choices)
    if _is_enum(hint):
        return "one of " + ", ".join(str(m.value) for m in hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and str in typing.get_args(hint):
        enums = [a for a in _union_args(hint) if _is_enum(a)]
        if enums:
            return type_name(enums[0])
    return getattr(hint, "__name__", None) if isinstance(hint, type) else str(hint).replace("typing.", "")


def _converts(kind, value: str) -> bool:
    try:
        kind(value)
    except (TypeError, ValueError):
        return False
    return True
