"""Build the datatrove stages from the config and run them on the chosen executor.

Stages (each a datatrove executor; its logs, stats and completion markers live in <work_dir>/logs/<stage>):
  documents  read sources -> per-document steps -> dedup signatures -> <work_dir>/documents/<rank>.jsonl
  buckets    `dedup_tasks` tasks: sorted signature files merged per bucket -> <work_dir>/dedup/pairs/  (with a dedup step)
  clusters   one task: groups over the pairs -> <work_dir>/dedup/removed/<rank>.jsonl           (with a dedup step)
  output     documents -> drop duplicates -> split, weights, augment -> <work_dir>/splits/<split>/<rank>.jsonl
  publish    report + copy into output_dir through a staging folder                  (driver; a job under Slurm)
Local and Ray runs go stage by stage from the driver; Slurm gets the chain as job arrays linked by afterok
dependencies; completed tasks are skipped on a rerun (llm_recipes/executors.py).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from loguru import logger

from llm_recipes import executors

from data_prep.config import DataPrepArguments
from data_prep.layout import Layout
from data_prep.dedup import DedupBuckets, DedupClusters, DedupDrop, DedupSignatures, bucket_names
from data_prep.sources import SourceReader
from data_prep.publish import PublishStep
from data_prep.split import SplitAndWeight, split_writer
from data_prep.steps import STEPS, build_step, step_name_of


def prepare_work_dir(args: DataPrepArguments) -> Layout:
    """Reuse the work folder only for the same data config; otherwise start it afresh."""
    layout = Layout(Path(args.work_dir))
    stamp = layout.work / "data_fingerprint.json"
    wanted = json.dumps(args.data_fingerprint(), sort_keys=True, default=str)
    if layout.work.exists() and (not stamp.exists() or stamp.read_text() != wanted):
        logger.info(f"{layout.work}: config or sources changed since the last run, starting afresh")
        shutil.rmtree(layout.work)
    layout.work.mkdir(parents=True, exist_ok=True)
    stamp.write_text(wanted)
    return layout


def stage_pipelines(args: DataPrepArguments, layout: Layout) -> dict[str, list]:
    """The steps of each datatrove stage, in order."""
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    dropped = str(layout.dropped) if args.write_dropped else None
    doc_steps = [build_step(i, spec, dropped_folder=dropped, seed=args.seed) for i, spec in enumerate(args.steps)
                 if STEPS[step_name_of(spec)].stage == "document"]
    exact = args.step_params("dedup_exact") is not None
    minhash = args.step_params("dedup_minhash")
    dedup = exact or minhash is not None
    documents = [SourceReader(args.parsed_sources, str(layout.bad_records)), *[s for s in doc_steps if s is not None]]
    if dedup:
        documents.append(DedupSignatures(str(layout.signatures), exact=exact, minhash=minhash))
    documents.append(JsonlWriter(str(layout.documents), output_filename="${rank}.jsonl", compression=None))
    output = [JsonlReader(str(layout.documents), glob_pattern="*.jsonl", shuffle_files=False)]
    if dedup:
        output.append(DedupDrop(str(layout.removed), dropped_folder=dropped))
    weights = {s.label: float(s.weight) for s in args.parsed_sources}
    output += [
        SplitAndWeight(args.validation_size, args.test_size, weights, args.step_params("augment"), seed=args.seed),
        split_writer(str(layout.splits)),
    ]
    stages = {"documents": documents}
    if dedup:
        buckets = bucket_names(exact, minhash)
        stages["buckets"] = [DedupBuckets(str(layout.signatures), str(layout.pairs), buckets, args.dedup_chunk_records)]
        stages["clusters"] = [DedupClusters(str(layout.signatures), str(layout.pairs), str(layout.removed))]
    stages["output"] = output
    return stages


def stage_tasks(args: DataPrepArguments, stage: str) -> int:
    return {"buckets": args.dedup_tasks, "clusters": 1, "publish": 1}.get(stage, args.tasks)


def make_executor(args: DataPrepArguments, layout: Layout, stage: str, pipeline: list, depends=None):
    # the local executor's fork server imports our steps once, not every worker of every stage; where that is the
    # documents stage, it loads spaCy's rules and jieba's dictionary too (each worker ~2 s of a core fewer)
    return executors.make_executor(
        args, pipeline, stage_tasks(args, stage), str(layout.stage_logs(stage)), f"data_prep_{stage}", depends,
        slurm_logs=str(layout.logs / "slurm" / stage),
        preload="data_prep.preload" if stage == "documents" else "data_prep.pipeline")


def run_stages(args: DataPrepArguments, layout: Layout) -> dict[str, float]:
    """Local / Ray: run the stages in order; stop with an error when any task of a stage did not complete.
    Returns the wall time of each stage in seconds."""
    if args.executor == "ray":
        executors.init_ray(args)
    return {stage: run_stage(args, layout, stage, pipeline) for stage, pipeline in stage_pipelines(args, layout).items()}


def run_stage(args: DataPrepArguments, layout: Layout, stage: str, pipeline: list) -> float:
    """One stage on the local or Ray executor; its wall time in seconds, or StageFailed (llm_recipes.executors) if any
    task did not complete."""
    executor = make_executor(args, layout, stage, pipeline)
    return executors.run_stage(executor, stage_tasks(args, stage), stage, str(layout.stage_logs(stage)))


def submit_slurm(args: DataPrepArguments, layout: Layout):
    """Slurm: submit the stages as job arrays chained by dependencies, the publish job last. Returns the last executor."""

    previous = None
    for stage, pipeline in stage_pipelines(args, layout).items():
        previous = make_executor(args, layout, stage, pipeline, depends=previous)
    publish = make_executor(args, layout, "publish", [PublishStep(args)], depends=previous)
    publish.run()
    return publish
