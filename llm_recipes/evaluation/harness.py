"""The model through lm-evaluation-harness's own command line (`lm_eval run --model hf`), on task YAMLs of this repo.

The task YAMLs name local files as ${DATA_DIR}/...; lm-eval does not expand variables, so they are copied with the
variables filled in to a folder under the run, which becomes `--include_path`. Nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from llm_recipes.config import ConfigError
from llm_recipes.run_info import REPO_ROOT


def expand_task_folder(include_path: str, target: Path) -> Path:
    source = Path(include_path) if Path(include_path).is_absolute() else REPO_ROOT / include_path
    if not source.is_dir():
        raise ConfigError(f"lm_eval_include_path {include_path}: no such folder")
    target.mkdir(parents=True, exist_ok=True)
    for file in source.iterdir():
        if file.suffix in (".yaml", ".py"):
            (target / file.name).write_text(os.path.expandvars(file.read_text(encoding="utf-8")), encoding="utf-8")
    return target


def run_lm_eval(source, args, context_length: int, prefix_token_id: int) -> dict:
    """lm-eval's results (metric per task), its command line and version; prefix token and context as ours."""
    model_args = {"pretrained": source.base if source.kind == "adapter" else source.path, "dtype": args.dtype,
                  "max_length": context_length, "prefix_token_id": prefix_token_id}
    if source.kind == "adapter":
        model_args["peft"] = source.path
    with tempfile.TemporaryDirectory(prefix="lm_eval_") as tmp:
        tasks_dir = expand_task_folder(args.lm_eval_include_path, Path(tmp) / "tasks")
        cmd = ["lm_eval", "run", "--model", "hf", "--model_args", ",".join(f"{k}={v}" for k, v in model_args.items()),
               "--tasks", ",".join(args.lm_eval_tasks), "--include_path", str(tasks_dir), "--device",
               "cuda" if _cuda() else "cpu", "--batch_size", str(args.batch_size), "--seed", str(args.seed),
               "--output_path", str(Path(tmp) / "out")]
        if args.lm_eval_limit:
            cmd += ["--limit", str(args.lm_eval_limit)]
        if args.lm_eval_num_fewshot is not None:
            cmd += ["--num_fewshot", str(args.lm_eval_num_fewshot)]
        # the console script of this interpreter's environment, run as a module so PATH does not matter
        done = subprocess.run([sys.executable, "-m", "lm_eval", *cmd[1:]], capture_output=True, text=True,
                              env={**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"})
        found = sorted((Path(tmp) / "out").rglob("results_*.json"))
        if done.returncode != 0 or not found:
            tail = "\n".join(done.stderr.strip().splitlines()[-15:])
            raise RuntimeError(f"lm_eval failed (exit {done.returncode}):\n{tail}")
        raw = json.loads(found[-1].read_text())
    display = [args.lm_eval_include_path if a == str(tasks_dir) else "<output_path>" if a.startswith(tmp) else a
               for a in cmd]
    return {"command": shlex.join(display), "version": raw.get("lm_eval_version") or _version(),
            "results": {task: {k.replace(",none", ""): v for k, v in metrics.items() if k != "alias"}
                        for task, metrics in raw["results"].items()},
            "n_samples": raw.get("n-samples", {})}


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("lm_eval")
    except metadata.PackageNotFoundError:
        return None
