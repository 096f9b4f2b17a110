"""What every run leaves in its output folder so it can be reproduced: the resolved config, package versions, git commit.

`resolved_config.yaml` is flat, like the recipe YAML files, so `--config out/resolved_config.yaml` replays the run.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from llm_recipes.atomic import atomic_write_text
from llm_recipes.redact import redact_argv

REPO_ROOT = Path(__file__).resolve().parent.parent

TRACKED_PACKAGES = (
    "torch",
    "transformers",
    "datasets",
    "accelerate",
    "peft",
    "trl",
    "deepspeed",
    "tokenizers",
    "evaluate",
    "huggingface_hub",
    "safetensors",
    "numpy",
    "datatrove",
)


def resolved_config(*dataclass_objs: Any) -> dict[str, Any]:
    """Merge the parsed dataclasses into one flat mapping of their init fields, secrets redacted."""
    merged: dict[str, Any] = {}
    for obj in dataclass_objs:
        for f in dataclasses.fields(obj):
            if f.init:
                merged[f.name] = _to_yaml_value(f.name, getattr(obj, f.name))
    return merged


def _to_yaml_value(name: str, value: Any) -> Any:
    if name == "token" or name.endswith("_token"):
        # Hub tokens come from the environment or `hf auth login`, and never end up in a file.
        return None
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_to_yaml_value("", v) for v in value]
    if isinstance(value, dict):
        return {str(k): _to_yaml_value(str(k), v) for k, v in value.items()}
    if dataclasses.is_dataclass(value):
        return resolved_config(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_state(repo: Path = REPO_ROOT) -> dict[str, Any]:
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def is_main_process() -> bool:
    """True on the process that should write shared files (rank 0 under torchrun / accelerate launch)."""
    return int(os.environ.get("RANK", "0")) == 0


def write_run_info(output_dir: str | os.PathLike, *dataclass_objs: Any, recipe: str | None = None) -> Path:
    """Write `resolved_config.yaml` and `run_info.json` into `output_dir`; returns the folder."""
    out = Path(output_dir)
    if not is_main_process():
        return out
    config = resolved_config(*dataclass_objs)
    header = f"# Resolved config of {recipe or 'this run'}: pass this file to --config to replay it.\n"
    atomic_write_text(out / "resolved_config.yaml", header + yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    info = {
        "recipe": recipe,
        "command": redact_argv([sys.executable, *sys.argv]),
        "started_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git": git_state(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": package_versions(),
    }
    atomic_write_text(out / "run_info.json", json.dumps(info, indent=2) + "\n")
    return out
