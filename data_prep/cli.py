"""`python -m data_prep --config configs/data/<recipe>.yaml [--key value ...]`: run the corpus pipeline."""

from __future__ import annotations

import os
import sys

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
    run_stages(args, layout)
    from data_prep.publish import publish

    out = publish(args)
    print(f"data_prep: wrote {out} (report.md, report.json, train/ validation/ test/)")
    return out
