"""`python -m data_prep --config configs/data/<recipe>.yaml [--key value ...]`: run the corpus pipeline."""

from __future__ import annotations

import json
import os
import sys
import time

# Nothing in this pipeline may download at run time: the steps' models ship in their wheels.
for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_var, "1")

from llm_recipes.config import RecipeParser  # noqa: E402
from llm_recipes.corpus import REPO_ROOT  # noqa: E402,F401  (sets DATA_DIR's default: ../shared/data)

from data_prep.config import DataPrepArguments  # noqa: E402


def parse(argv: list[str] | None = None) -> DataPrepArguments:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--list_steps" in argv:
        from data_prep.steps import describe_steps

        print(describe_steps())
        raise SystemExit(0)
    parser = RecipeParser(DataPrepArguments, prog="data_prep", description=__doc__)
    (args,) = parser.parse(argv)
    return args


def main(argv: list[str] | None = None):
    args = parse(argv)
    from data_prep.pipeline import prepare_work_dir, run_stages, submit_slurm

    layout = prepare_work_dir(args)
    if args.executor == "slurm":
        submit_slurm(args, layout)
        print(f"data_prep: submitted the Slurm job chain; scripts and logs in {layout.logs}")
        return None
    timings = run_stages(args, layout)
    from data_prep.publish import publish

    start = time.perf_counter()
    out = publish(args)
    timings["publish"] = round(time.perf_counter() - start, 2)
    # Wall times vary run to run: kept out of report.json, which must compare equal across runs and executors.
    (out / "timing.json").write_text(json.dumps({"executor": args.executor, "seconds": timings}, indent=2) + "\n")
    print(f"data_prep: wrote {out} (report.md, report.json, train/ validation/ test/); seconds per stage: {timings}")
    return out
