"""Run a whole pipeline (a flat list of stages, each one command) into one run folder, skipping unchanged stages.

    python recipes/run_pipeline.py --config configs/pipeline/tiny.yaml                  # what `make demo` runs
    python recipes/run_pipeline.py --config configs/pipeline/tiny.yaml --run_dir outputs/b --force true

A stage reruns only when its fingerprint changed: its command, the contents of the files the command names (configs,
launch configs), the files under its `inputs` (size and modification time), the fingerprints of the earlier stages
whose outputs it reads (any `{run_dir}/<output>` in its command), and the repo's code. A changed stage starts from
empty outputs; an unchanged one is skipped in well under a second, so a second run of the demo costs only the
checks. Each stage's output goes to `<run_dir>/logs/<stage>.log` as well as the console; `<run_dir>/pipeline.json`
records every stage's status, seconds and command (the run report reads it).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from llm_recipes.atomic import atomic_write_text
from llm_recipes.config import ConfigError, RecipeParser
from llm_recipes.run_info import REPO_ROOT, write_run_info
from llm_recipes.stages import run_logged

PLACEHOLDERS = {"python", "bin", "run_dir", "threads"}
CODE = ("recipes", "llm_recipes", "data_prep")  # a change here reruns every stage: results depend on it


@dataclass
class Stage:
    name: str
    run: str  # one command; {python}, {bin}, {run_dir} and {threads} are filled in
    outputs: list[str] = field(default_factory=list)  # folders under run_dir it writes (emptied before a rerun)
    inputs: list[str] = field(default_factory=list)  # files / folders it reads from outside the run (${ENV} expands)


@dataclass
class PipelineArguments:
    stages: list[dict] = field(
        default_factory=list,
        metadata={"help": "The stages in order: {name, run, outputs, inputs} mappings. `run` is one command; "
                          "{python} (this interpreter), {bin} (its scripts folder), {run_dir} and {threads} (CPU "
                          "cores / the command's --num_processes) are filled in."},
    )
    run_dir: str = field(default="outputs/tiny", metadata={"help": "The run folder every stage writes into."})
    force: bool = field(default=False, metadata={"help": "Rerun every stage, changed or not."})
    dry_run: bool = field(default=False, metadata={"help": "Print which stages would run or be skipped, and stop."})
    warm: bool = field(
        default=True,
        metadata={"help": "Start each `{python} script.py` / `{python} -m module` stage as a fork of this process with "
                          "transformers, TRL, PEFT and datasets already imported (about 7 s less per stage on 2 "
                          "cores; the same command line, environment and outputs); false: a new interpreter each. "
                          "Other commands (accelerate launch) always start their own."})

    def __post_init__(self):
        known = {"name", "run", "outputs", "inputs"}
        parsed, names = [], set()
        for i, item in enumerate(self.stages):
            if not isinstance(item, dict) or not {"name", "run"} <= set(item) or set(item) - known:
                raise ConfigError(f"stages[{i}]: expected a mapping with name and run (keys: {sorted(known)}), "
                                  f"got {item!r}")
            unknown = set(re.findall(r"\{(\w+)\}", item["run"])) - PLACEHOLDERS
            if unknown:
                raise ConfigError(f"stages[{i}] ({item['name']}): unknown placeholder(s) {sorted(unknown)} in run; "
                                  f"known: {sorted(PLACEHOLDERS)}")
            if item["name"] in names:
                raise ConfigError(f"stages[{i}]: stage name {item['name']!r} used twice")
            names.add(item["name"])
            parsed.append(Stage(**item))
        if not parsed:
            raise ConfigError("stages: the pipeline has no stages")
        self.stages = parsed


def make_parser() -> RecipeParser:
    return RecipeParser(PipelineArguments)


def command(stage: Stage, run_dir: str) -> list[str]:
    procs = re.search(r"--num_processes[ =](\d+)", stage.run)
    values = {"python": sys.executable, "bin": str(Path(sys.executable).parent), "run_dir": run_dir,
              "threads": str(max(1, (os.cpu_count() or 1) // int(procs.group(1) if procs else 1)))}
    # Only the known {name}s are filled in, so a JSON argument's braces pass through untouched.
    return shlex.split(re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), m.group(0)), stage.run))


def portable(arg: str) -> str:
    """An argument without this venv's location: moving or recreating the venv changes no fingerprint."""
    return arg.replace(sys.executable, "python").replace(str(Path(sys.executable).parent) + "/", "")


def _tree_stats(path: Path) -> list:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files if p.exists()]


def code_fingerprint() -> str:
    h = hashlib.sha256()
    for top in CODE:
        for p in sorted((REPO_ROOT / top).rglob("*.py")):
            h.update(str(p.relative_to(REPO_ROOT)).encode() + b"\0" + p.read_bytes())
    h.update((REPO_ROOT / "requirements.txt").read_bytes())
    return h.hexdigest()


def mentions(arg: str, folder: str) -> bool:
    """Whether an argument names `folder` or a path under it, alone or inside a JSON value (`--datasets '{"path":
    "outputs/tiny/pairs/pairs.jsonl"}'` reads the pairs stage's output)."""
    return re.search(rf'(^|["\'\s=]){re.escape(folder)}(/|["\'\s]|$)', arg) is not None


def fingerprint(stage: Stage, argv: list[str], done: dict[str, str], code: str) -> tuple[str, list]:
    """The stage's fingerprint and the earlier stages it reads (from `done`: output folder -> stage fingerprint)."""
    files = {a: hashlib.sha256(Path(a).read_bytes()).hexdigest() for a in argv if os.path.isfile(a)}
    reads = sorted({out for a in argv for out in done if mentions(a, out)})
    inputs = [_tree_stats(Path(os.path.expandvars(p))) for p in stage.inputs]
    record = {"argv": [portable(a) for a in argv], "files": files, "inputs": inputs,
              "reads": {r: done[r] for r in reads}, "code": code}
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest(), reads


def run_pipeline(args: PipelineArguments) -> list[dict]:
    run_dir, code = args.run_dir.rstrip("/"), code_fingerprint()
    stamps, record_path = Path(run_dir) / ".stages", Path(run_dir) / "pipeline.json"
    done: dict[str, str] = {}  # "<run_dir>/<output>" -> fingerprint of the stage that wrote it
    records = []
    for i, stage in enumerate(args.stages, 1):
        argv = command(stage, run_dir)
        fp, reads = fingerprint(stage, argv, done, code)
        stamp = stamps / f"{stage.name}.json"
        outputs = [Path(run_dir) / o for o in stage.outputs]
        old = json.loads(stamp.read_text()) if stamp.is_file() else {}
        fresh = not args.force and old.get("fingerprint") == fp and all(o.exists() for o in outputs)
        head = f"[{i}/{len(args.stages)}] {stage.name}"
        entry = {"name": stage.name, "command": shlex.join(portable(a) for a in argv),
                 "outputs": stage.outputs, "reads": [r[len(run_dir) + 1:] for r in reads], "fingerprint": fp[:16]}
        if args.dry_run:
            print(f"{head}: {'skip (unchanged)' if fresh else 'run'}: {entry['command']}")
        elif fresh:
            print(f"{head}: unchanged since {old['finished']}, skipped ({old['seconds']:.0f} s saved)", flush=True)
            entry.update(status="skipped", seconds=0.0, ran_seconds=old["seconds"])
        else:
            print(f"{head}: {entry['command']}", flush=True)
            stamp.unlink(missing_ok=True)
            for out in outputs:  # a changed stage starts clean: no stale checkpoint, cache or task marker
                shutil.rmtree(out, ignore_errors=True)
            start = time.perf_counter()
            rc = run_logged(argv, Path(run_dir) / "logs" / f"{stage.name}.log", args.warm)
            entry.update(status="ran" if rc == 0 else "failed", seconds=round(time.perf_counter() - start, 1))
            if rc == 0:
                stamps.mkdir(parents=True, exist_ok=True)
                atomic_write_text(stamp, json.dumps({"fingerprint": fp, "seconds": entry["seconds"],
                                                     "finished": time.strftime("%Y-%m-%d %H:%M:%S")}) + "\n")
                print(f"{head}: done in {entry['seconds']:.0f} s", flush=True)
        done.update({f"{run_dir}/{o}": fp for o in stage.outputs})
        records.append(entry)
        if not args.dry_run:
            atomic_write_text(record_path, json.dumps({"run_dir": run_dir, "stages": records}, indent=2) + "\n")
        if entry.get("status") == "failed":
            sys.exit(f"{head} failed with exit code {rc}; its log: {run_dir}/logs/{stage.name}.log")
    return records


def main(argv: list[str] | None = None) -> list[dict]:
    parser = make_parser()
    (args,) = parser.parse(argv)
    start = time.perf_counter()
    records = run_pipeline(args)
    if not args.dry_run:
        write_run_info(args.run_dir, args, recipe="run_pipeline")
        ran = [r["name"] for r in records if r["status"] == "ran"]
        print(f"pipeline: {len(records)} stages in {time.perf_counter() - start:.0f} s; ran {len(ran)}"
              f"{': ' + ', '.join(ran) if ran else ''}; skipped {len(records) - len(ran)}. Run folder: {args.run_dir}")
    return records


if __name__ == "__main__":
    main()
