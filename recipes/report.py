"""One Markdown page (plus PNGs) about a finished run, read from its run folder only: data funnel per source,
tokenizer and packing stats, training curves and throughput per stage (TensorBoard events), evaluation scores with
confusion matrices, sample generations and every stage's resolved config.

    python recipes/report.py --runs tiny                      # outputs/tiny -> outputs/tiny/report/report.md
    python recipes/report.py --runs outputs/a outputs/b       # side by side -> outputs/report-a-vs-b/report.md

Never reads the data or runs a model, so it takes seconds and works on a copied run folder. A file the run does not
have (a skipped stage) leaves its section at "not in this run (<file> missing)"; the page lists at its top which
sections were filled. The folder is written beside `output_dir` and renamed into place; the same run folders give the
same report.md.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

from llm_recipes.atomic import publish_dir, stop_cleanly_when_disk_full
from llm_recipes.config import ConfigError, RecipeParser
from llm_recipes.reporting.sections import CONFIG_ORDER, Run, build_report
from llm_recipes.run_info import write_run_info

logger = logging.getLogger("report")
# what makes a folder a run folder: any one of these (a stage's own folder, e.g. outputs/tiny/eval, has none)
RUN_MARKERS = ("pipeline.json", "data/report.json", "tokenizer/tokenizer_report.json", "packed/stats.json",
               *(f"{stage}/resolved_config.yaml" for stage in CONFIG_ORDER))


@dataclass
class ReportArguments:
    runs: list[str] = field(default_factory=lambda: ["tiny"], metadata={
        "help": "Run folders (outputs/<run>) or bare run names looked up under outputs_root; two or more are shown "
                "side by side (one table column and one curve colour per run)."})
    output_dir: str | None = field(default=None, metadata={
        "help": "Where report.md and its PNGs go; default: <run>/report for one run, "
                "<outputs_root>/report-<a>-vs-<b> for several."})
    outputs_root: str = field(default="outputs", metadata={
        "help": "Where bare run names are looked up, and where a comparison of runs goes by default."})
    max_samples: int = field(default=20, metadata={"help": "Sample generations shown per run (eval/generations.jsonl)."})


def make_parser() -> RecipeParser:
    return RecipeParser(ReportArguments)


def resolve_runs(args: ReportArguments) -> list[Run]:
    if not args.runs:
        raise ConfigError("runs: name at least one run folder")
    runs = []
    for given in args.runs:
        path = Path(given)
        if not path.is_dir() and not path.is_absolute() and len(path.parts) == 1:
            path = Path(args.outputs_root) / given  # a bare run name
        if not path.is_dir():
            raise ConfigError(f"runs: run folder {path} not found (make demo RUN={path.name} writes it)")
        if not any((path / marker).is_file() for marker in RUN_MARKERS):
            raise ConfigError(f"runs: {path} is not a run folder (it has none of {', '.join(RUN_MARKERS[:4])}, "
                              "<stage>/resolved_config.yaml)")
        runs.append(Run(path.resolve().name, path))
    names = [r.name for r in runs]
    if len(set(names)) < len(names):
        raise ConfigError(f"runs: two run folders share a name ({', '.join(names)}); the report tells runs apart by "
                          "folder name")
    return runs


def output_dir(args: ReportArguments, runs: list[Run]) -> Path:
    if args.output_dir:
        return Path(args.output_dir)
    if len(runs) == 1:
        return runs[0].path / "report"
    return Path(args.outputs_root) / ("report-" + "-vs-".join(r.name for r in runs))


def main(argv: list[str] | None = None) -> Path:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    parser = make_parser()
    (args,) = parser.parse(argv)
    try:
        runs = resolve_runs(args)
        out = output_dir(args, runs)
        with publish_dir(out) as staging:
            (staging / "report.md").write_text(
                build_report(runs, staging, skip={out.resolve()}, max_samples=args.max_samples), encoding="utf-8")
            write_run_info(staging, args, recipe="report")
    except ConfigError as e:
        parser.error(str(e))
    logger.info("report in %s", out / "report.md")
    return out / "report.md"


if __name__ == "__main__":
    with stop_cleanly_when_disk_full("report.py"):
        main(sys.argv[1:])
