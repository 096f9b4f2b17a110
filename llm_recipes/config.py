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
import os
import sys
from collections.abc import Iterable, Sequence
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
        actions: dict[str, argparse.Action] = {}
        for action in self._actions:
            actions.setdefault(action.dest, action)  # `--flag` comes before its `--no_flag` twin
        unknown = [k for k in config if k not in actions and k != "env"]
        if unknown:
            self._fail_unknown(unknown, where=path)
        for key, value in config.items():
            if key != "env":
                self._check_yaml_value(actions[key], key, value, path)

    def _fail_unknown(self, keys: Iterable[str], where: str) -> None:
        known = [a.dest for a in self._actions if a.dest != "help"]
        parts = []
        for key in keys:
            hint = difflib.get_close_matches(key.lstrip("-"), known, n=1)
            parts.append(f"'{key}'" + (f" (did you mean '{hint[0]}'?)" if hint else ""))
        self.error(f"{where}: unknown key {', '.join(parts)}")

    def _check_yaml_value(self, action: argparse.Action, key: str, value: Any, path: str) -> None:
        """argparse converts CLI strings, but YAML values become defaults as they are: check them here."""
        if value is None or action.type is None:
            return
        many = action.nargs in ("+", "*")
        for item in (value if many and isinstance(value, list) else [value]):
            if not _fits(action, item):
                expected = getattr(action.type, "__name__", str(action.type))
                if action.choices:
                    expected = "one of " + ", ".join(str(_plain(c)) for c in action.choices)
                self.error(f"{path}: key '{key}' has value {item!r} ({type(item).__name__}); expected {expected}")


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


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, enum.Enum) else value


def _fits(action: argparse.Action, value: Any) -> bool:
    # TRL wraps `T | None` converters but keeps the inner converter's __name__: compare by name.
    kind = action.type
    name = getattr(kind, "__name__", "")
    if isinstance(value, bool):
        # bool is an int in Python; only accept it where the field is a flag (or free text).
        return name in ("string_to_bool", "str")
    if name == "int":
        return isinstance(value, int) or (isinstance(value, str) and _converts(kind, value))
    if name == "float":
        return isinstance(value, (int, float)) or (isinstance(value, str) and _converts(kind, value))
    if name == "string_to_bool":
        return isinstance(value, str) and _converts(kind, value)
    if action.choices and isinstance(value, (str, int, float)):
        return str(_plain(value)) in {str(_plain(c)) for c in action.choices}
    return True


def _converts(kind, value: str) -> bool:
    try:
        kind(value)
    except (TypeError, ValueError, argparse.ArgumentTypeError):
        return False
    return True
