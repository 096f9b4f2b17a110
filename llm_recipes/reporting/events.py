"""Scalars of a training stage's TensorBoard event files, as the Trainer's TensorBoardCallback wrote them."""

from __future__ import annotations

from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

Scalars = dict[str, list[tuple[int, float]]]  # tag -> [(step, value)] by step
EVENTS = "runs/*/events.out.tfevents.*"  # where TensorBoardCallback writes, under a stage's output_dir


def event_files(stage_dir: Path) -> list[Path]:
    return sorted(stage_dir.glob(EVENTS))


def read_scalars(stage_dir: Path) -> Scalars:
    """Every scalar under `stage_dir/runs/*/`, by tag, in step order. A resumed run writes a new file that logs some
    steps again: per step, the latest write wins (the accumulator's own orphan purge works within one file only)."""
    points: dict[str, dict[int, tuple[float, float]]] = {}
    for path in event_files(stage_dir):
        acc = EventAccumulator(str(path), size_guidance={"scalars": 0}, purge_orphaned_data=False)
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            by_step = points.setdefault(tag, {})
            for e in acc.Scalars(tag):
                if e.step not in by_step or e.wall_time >= by_step[e.step][0]:
                    by_step[e.step] = (e.wall_time, e.value)
    return {tag: [(step, value) for step, (_, value) in sorted(by_step.items())]
            for tag, by_step in sorted(points.items())}


def last(scalars: Scalars, tag: str) -> float | None:
    return scalars[tag][-1][1] if scalars.get(tag) else None
