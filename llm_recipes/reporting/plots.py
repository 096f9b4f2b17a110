"""The report's PNGs: one colour per run, so a comparison of runs overlays them in one figure."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

from llm_recipes.reporting.events import Scalars

# (panel title, tags drawn in it); the first three always, the others (DPO's rewards) when some run logged them
PANELS = (("loss", ("train/loss", "eval/loss")), ("learning rate", ("train/learning_rate",)),
          ("grad norm", ("train/grad_norm",)), ("reward margin", ("train/rewards/margins", "eval/rewards/margins")),
          ("reward accuracy", ("train/rewards/accuracies", "eval/rewards/accuracies")))


def colour(i: int):
    return plt.get_cmap("tab10")(i % 10)


def _save(fig, path: Path) -> None:
    fig.savefig(path, metadata={"Software": None})  # no version stamp: the same run folder gives the same bytes
    plt.close(fig)


def _ordered_union(lists) -> list:
    seen: dict = {}
    for items in lists:
        seen.update(dict.fromkeys(items))
    return list(seen)


def funnel_png(reports: dict[str, dict], path: Path) -> None:
    """Left: records read and documents kept per source; right: documents left after each step."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8), dpi=110)
    sources = _ordered_union(r.get("sources_funnel", {}) for r in reports.values())
    width = 0.8 / len(reports)
    for i, (run, report) in enumerate(reports.items()):
        per_source = report.get("sources_funnel", {})
        x = [j - 0.4 + width * (i + 0.5) for j in range(len(sources))]
        read = [per_source.get(s, {}).get("records_read", 0) for s in sources]
        kept = [per_source.get(s, {}).get("documents_out", 0) for s in sources]
        prefix = f"{run}: " if len(reports) > 1 else ""
        left.bar(x, read, width, color=colour(i), alpha=0.3, label=f"{prefix}records read")
        left.bar(x, kept, width, color=colour(i), label=f"{prefix}documents out")
    left.set_xticks(range(len(sources)), sources, rotation=30, ha="right", fontsize=8)
    left.set_title("per source", fontsize=9)
    left.legend(fontsize=7)
    steps = _ordered_union([f"{row['stage']}/{row['step']}" for row in r.get("funnel", [])] for r in reports.values())
    for i, (run, report) in enumerate(reports.items()):
        left_after = {f"{row['stage']}/{row['step']}": row["docs_out"] for row in report.get("funnel", [])}
        right.plot(range(len(steps)), [left_after.get(s, float("nan")) for s in steps], marker="o", ms=3,
                   color=colour(i), label=run)
    right.set_xticks(range(len(steps)), [s.split("/", 1)[1] for s in steps], rotation=60, ha="right", fontsize=7)
    right.set_title("documents left after each step", fontsize=9)
    if len(reports) > 1:
        right.legend(fontsize=7)
    fig.subplots_adjust(left=0.06, right=0.99, bottom=0.3, top=0.93, wspace=0.15)  # fixed: tight_layout costs 2x
    _save(fig, path)


def curves_png(stage: str, per_run: dict[str, Scalars], path: Path) -> None:
    """One panel per quantity (loss with eval loss, learning rate, grad norm, DPO rewards); each run one colour, eval
    dashed with markers."""
    panels = [p for i, p in enumerate(PANELS) if i < 3 or any(t in s for s in per_run.values() for t in p[1])]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.3 * len(panels), 2.9), dpi=110, squeeze=False)
    for ax, (title, tags) in zip(axes[0], panels):
        for i, (run, scalars) in enumerate(per_run.items()):
            for tag in tags:
                if scalars.get(tag):
                    steps, values = zip(*scalars[tag])
                    split = tag.split("/", 1)[0]
                    ax.plot(steps, values, color=colour(i), ls="--" if split == "eval" else "-",
                            marker="o" if split == "eval" else None, ms=3,
                            label=f"{run} {split}" if len(per_run) > 1 else split)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle(stage, fontsize=10)
    fig.subplots_adjust(left=0.2 / len(panels), right=0.99, bottom=0.17, top=0.83, wspace=0.35)
    _save(fig, path)
