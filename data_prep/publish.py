"""Last stage: build the report and move the splits into output_dir through a staging folder (all or nothing)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from datatrove.pipeline.base import PipelineStep
from loguru import logger

from llm_recipes.atomic import publish_dir
from llm_recipes.executors import EXECUTOR_KEYS
from llm_recipes.run_info import resolved_config, write_run_info

from data_prep.config import DataPrepArguments
from data_prep.layout import Layout
from data_prep.report import build_report, check_accounting, markdown, warning_text, write_histogram_png


RUN_ONLY_KEYS = ("output_dir", "work_dir", "dedup_tasks", "dedup_chunk_records", *EXECUTOR_KEYS)


def publish(args: DataPrepArguments) -> Path:
    layout = Layout(Path(args.work_dir))
    final = Path(args.output_dir)
    with publish_dir(final) as staging:
        for split in ("train", "validation", "test"):
            src = layout.splits / split
            if src.exists():
                shutil.copytree(src, staging / split)
        # Where and how it ran is in resolved_config.yaml / run_info.json; the report holds only what decides the data,
        # so the same input gives the same report on any executor and in any folder.
        config = {k: v for k, v in resolved_config(args).items() if k not in RUN_ONLY_KEYS}
        report = build_report(layout, staging, config, sources=[s.label for s in args.parsed_sources])
        check_accounting(report)
        for warning in report["warnings"]:
            logger.warning(f"data_prep: {warning_text(warning)}; see the funnel per source in report.md")
        (staging / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        (staging / "report.md").write_text(markdown(report), encoding="utf-8")
        write_histogram_png(report["length_histogram_by_language"], staging / "length_histogram.png")
        if args.write_dropped and layout.dropped.exists():
            shutil.copytree(layout.dropped, staging / "dropped")
        write_run_info(staging, args, recipe="data_prep")
    return final


class PublishStep(PipelineStep):
    """The publish stage as a datatrove step, for Slurm where it runs as the last job of the chain."""

    type = "data_prep"
    name = "publish"

    def __init__(self, args: DataPrepArguments):
        super().__init__()
        self.args = args

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        publish(self.args)
        return
        yield
