"""The seven sections of the run report, each filled from a few files of the run folder (outputs/<run>/), never from
the data or a model. A missing file turns its part of a section into one "not in this run (<file> missing)" line.

Every table has one layout for every section: for one run, rows x metrics; for several runs, one row per (row,
metric) and one column per run, so runs compare side by side. Nothing that changes between two reports of the same
folders (times, absolute paths) goes into the Markdown.
"""

from __future__ import annotations

import html
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm_recipes.config import ConfigError
from llm_recipes.evaluation.report import confusion_png
from llm_recipes.reporting import plots
from llm_recipes.reporting.events import EVENTS, Scalars, last, read_scalars

TRAINING_STAGES = ("pretrain", "sft-lora", "sft", "dpo", "classify")  # folders with runs/*/events.*, pipeline order
SFT = ("sft-lora", "sft")  # either one: a LoRA run (sft-lora) and its merged model (sft, no events), or a full SFT run
CONFIG_ORDER = ("data", "tokenizer", "packed", *TRAINING_STAGES, "eval", "export")
Rows = dict[str, dict[str, Any]]  # row label -> metric -> value


@dataclass
class Run:
    name: str
    path: Path
    _scalars: dict[str, Scalars] = field(default_factory=dict, repr=False)

    def json(self, rel: str) -> Any | None:
        path = self.path / rel
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: not valid JSON ({e})") from None

    def jsonl(self, rel: str) -> list[dict] | None:
        path = self.path / rel
        if not path.is_file():
            return None
        rows = []
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            try:
                rows += [json.loads(line)] if line.strip() else []
            except json.JSONDecodeError as e:
                raise ConfigError(f"{path}, line {i}: invalid JSON ({e.msg})") from None
        return rows

    def scalars(self, stage: str) -> Scalars:
        if stage not in self._scalars:
            self._scalars[stage] = read_scalars(self.path / stage)
        return self._scalars[stage]


@dataclass
class Section:
    title: str
    lines: list[str]
    filled: dict[str, bool]  # run name -> whether this run had the section's files


# --- Markdown -------------------------------------------------------------------------------------------------------


def fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    # generated text: no HTML, no table breaks
    return html.escape(str(value), quote=False).replace("|", "\\|").replace("\n", "<br>")


def _union(items) -> list:
    seen: dict = {}
    for keys in items:
        seen.update(dict.fromkeys(keys))
    return list(seen)


def table(key: str, per_run: dict[str, Rows | None]) -> list[str]:
    """One run: a row per label, a column per metric. Several: a row per (label, metric), a column per run."""
    present = [rows for rows in per_run.values() if rows]
    labels = _union(present)
    if not labels:
        return []
    if len(per_run) == 1:
        metrics = _union(row for rows in present for row in rows.values())
        numeric = [all(isinstance(row.get(m), (int, float, type(None))) for row in present[0].values())
                   for m in metrics]  # numbers right-aligned, text left
        lines = [f"| {key} | " + " | ".join(metrics) + " |", "|---|" + "".join("---:|" if n else "---|"
                                                                              for n in numeric)]
        return lines + [f"| {fmt(label)} | " + " | ".join(fmt(present[0][label].get(m)) for m in metrics) + " |"
                        for label in labels] + [""]
    lines = [f"| {key} | metric | " + " | ".join(f"`{run}`" for run in per_run) + " |",
             "|---|---|" + "---:|" * len(per_run)]
    for label in labels:
        for m in _union(rows[label] for rows in present if label in rows):
            cells = [fmt((rows or {}).get(label, {}).get(m)) for rows in per_run.values()]
            lines.append(f"| {fmt(label)} | {m} | " + " | ".join(cells) + " |")
    return lines + [""]


def missing(found: dict[str, Any], rel: str) -> list[str]:
    gone = [run for run, value in found.items() if not value]
    if not gone:
        return []
    who = "this run" if len(found) == 1 else "run " + ", ".join(f"`{run}`" for run in gone)
    return [f"_not in {who} ({rel} missing)_", ""]


def pct(part: float, whole: float) -> str | None:
    return f"{part / whole:.1%}" if whole else None


# --- 1. data funnel -------------------------------------------------------------------------------------------------


def _source_rows(report: dict) -> Rows:
    rows = {}
    for label, s in report.get("sources_funnel", {}).items():
        worst = max(s["steps"].items(), key=lambda kv: kv[1]["documents_dropped"], default=None)
        rows[label] = {"records read": s["records_read"], "documents out": s["documents_out"],
                       "characters read": s["characters_read"], "characters out": s["characters_out"],
                       "characters kept": pct(s["characters_out"], s["characters_read"]),
                       "most dropped by": f"{worst[0]} ({worst[1]['documents_dropped']:,})"
                       if worst and worst[1]["documents_dropped"] else "-"}
    return rows


def data_section(runs: list[Run], out: Path) -> Section:
    reports = {r.name: r.json("data/report.json") for r in runs}
    lines = missing(reports, "data/report.json")
    have = {run: rep for run, rep in reports.items() if rep}
    if have:
        no_sources = {run: rep.get("sources_funnel") if rep else True for run, rep in reports.items()}
        lines += ["### Per source", "", *missing(no_sources, "sources_funnel in data/report.json"),
                  *table("source", {run: rep and _source_rows(rep) for run, rep in reports.items()}),
                  "### Per step", "",
                  *table("step", {run: rep and {f"{s['stage']}/{s['step']}": {
                      "documents out": s["docs_out"], "dropped": s["dropped"],
                      "reasons": ", ".join(f"{k} {v}" for k, v in s["drops"].items()) or "-",
                      # e.g. split's weight_repeats: why a step can put out more documents than it took in
                      "counted": ", ".join(f"{k} {v:,}" for k, v in s.get("counts", {}).items()) or "-"}
                      for s in rep.get("funnel", [])} for run, rep in reports.items()}),
                  "![data funnel](data_funnel.png)", ""]
        plots.funnel_png(have, out / "data_funnel.png")
    return Section("Data funnel", lines, {run: rep is not None for run, rep in reports.items()})


# --- 2. tokenizer and packing ---------------------------------------------------------------------------------------


def tokenizer_section(runs: list[Run], out: Path) -> Section:
    toks = {r.name: r.json("tokenizer/tokenizer_report.json") for r in runs}
    packs = {r.name: r.json("packed/stats.json") for r in runs}
    lines = ["### Tokenizer", "", *missing(toks, "tokenizer/tokenizer_report.json"),
             *table("tokenizer", {run: t and {"vocabulary": {
                 "size": t["vocab_size"], "used": t["vocab_used"], "used share": pct(t["vocab_used"], t["vocab_size"])}}
                 for run, t in toks.items()}),
             *table("language (validation)", {run: t and {lang: {
                 "documents": v["documents"], "tokens": v["tokens"], "chars/token": v["chars_per_token"],
                 "bytes/token": v["bytes_per_token"]} for lang, v in t.get("by_language", {}).items()}
                 for run, t in toks.items()}),
             "### Packing", "", *missing(packs, "packed/stats.json"),
             *table("split", {run: p and {split: {
                 "documents": v["documents"], "tokens": v["tokens"], "blocks": v["blocks"],
                 "block size": v["block_size"], "dropped tail tokens": v["dropped_tail_tokens"],
                 "real-token share": v.get("real_token_share")} for split, v in p.get("splits", {}).items()}
                 for run, p in packs.items()})]
    return Section("Tokenizer and packing", lines, {r.name: bool(toks[r.name] or packs[r.name]) for r in runs})


# --- 3. training curves ---------------------------------------------------------------------------------------------


def _curve_summary(s: Scalars) -> dict[str, Any]:
    evals = [v for _, v in s.get("eval/loss", [])]
    row = {"steps": s["train/loss"][-1][0] if s.get("train/loss") else None, "final train loss": last(s, "train/loss"),
           "final eval loss": evals[-1] if evals else None, "best eval loss": min(evals) if evals else None}
    for tag in ("eval/rewards/accuracies", "eval/rewards/margins"):
        if s.get(tag):
            row[f"final {tag.replace('/rewards/', ' reward ')}"] = last(s, tag)
    return row


def curves_section(runs: list[Run], out: Path) -> Section:
    stages = [st for st in TRAINING_STAGES if any(r.scalars(st) for r in runs)]
    absent = [st for st in TRAINING_STAGES if st not in stages and not (st in SFT and set(SFT) & set(stages))]
    who = "this run" if len(runs) == 1 else "these runs"
    lines = [f"_not in {who}: {', '.join(absent)} (<stage>/{EVENTS} missing)_", ""] if absent else []
    lines += table("stage", {r.name: {st: _curve_summary(r.scalars(st)) for st in stages if r.scalars(st)}
                             for r in runs})
    for stage in stages:
        per_run = {r.name: r.scalars(stage) for r in runs}
        lines += [f"### {stage}", "", *missing(per_run, f"{stage}/{EVENTS}"), f"![{stage} curves](curves_{stage}.png)",
                  ""]
        plots.curves_png(stage, {run: s for run, s in per_run.items() if s}, out / f"curves_{stage}.png")
    return Section("Training curves", lines, {r.name: any(r.scalars(st) for st in stages) for r in runs})


# --- 4. throughput --------------------------------------------------------------------------------------------------


def _pipeline(run: Run) -> Rows | None:
    """recipes/run_pipeline.py's record: {"stages": [{name, status, seconds, ran_seconds (when skipped)}]}."""
    data = run.json("pipeline.json")
    if data is None:
        return None
    entries = data.get("stages", []) if isinstance(data, dict) else data
    return {str(e.get("name")): {"status": e.get("status"), "seconds": e.get("seconds"),
                                 "seconds when it last ran": e.get("ran_seconds", e.get("seconds"))} for e in entries}


def throughput_section(runs: list[Run], out: Path) -> Section:
    def rows(run: Run) -> Rows:
        result = {}
        for stage in TRAINING_STAGES:
            s = run.scalars(stage)
            if s.get("train/tokens_per_second"):
                mean = {t: statistics.fmean(v for _, v in s[t]) if s.get(t) else None
                        for t in ("train/real_token_share", "train/mfu")}
                result[stage] = {"tokens/s (median)": statistics.median(v for _, v in s["train/tokens_per_second"]),
                                 "real-token share": mean["train/real_token_share"], "MFU": mean["train/mfu"],
                                 "train runtime (s)": last(s, "train/train_runtime")}
        return result

    speed = {r.name: rows(r) for r in runs}
    pipes = {r.name: _pipeline(r) for r in runs}
    lines = [*missing(speed, "train/tokens_per_second in " + EVENTS), *table("stage", speed),
             "MFU: n/a where the Trainer knew no peak FLOP/s (CPU runs).", "", "### Stage wall times", "",
             *missing(pipes, "pipeline.json"), *table("stage", pipes)]
    return Section("Throughput", lines, {r.name: bool(speed[r.name] or pipes[r.name]) for r in runs})


# --- 5. evaluation --------------------------------------------------------------------------------------------------


def scores_from_confusion(matrix: list[list[int]]) -> dict[str, float]:
    """Accuracy and macro precision / recall / F1 of a confusion matrix (rows: true, columns: predicted); a class
    never predicted (or never present) scores 0, as sklearn's zero_division=0."""
    n = len(matrix)
    tp = [matrix[i][i] for i in range(n)]
    predicted = [sum(matrix[i][j] for i in range(n)) for j in range(n)]
    actual = [sum(row) for row in matrix]
    precision = [t / p if p else 0.0 for t, p in zip(tp, predicted)]
    recall = [t / a if a else 0.0 for t, a in zip(tp, actual)]
    f1 = [2 * t / (p + a) if p + a else 0.0 for t, p, a in zip(tp, predicted, actual)]
    total = sum(actual)
    return {"accuracy": sum(tp) / total if total else 0.0, "precision_macro": sum(precision) / n,
            "recall_macro": sum(recall) / n, "f1_macro": sum(f1) / n}


def scores(result: dict) -> dict[str, Any]:
    """The scores a result holds, the ones it lacks computed from its confusion matrix."""
    computed = scores_from_confusion(result["confusion_matrix"]) if result.get("confusion_matrix") else {}
    got = {k: result.get(k, computed.get(k)) for k in ("accuracy", "precision_macro", "recall_macro", "f1_macro")}
    return {"accuracy": got["accuracy"], "precision (macro)": got["precision_macro"],
            "recall (macro)": got["recall_macro"], "F1 (macro)": got["f1_macro"],
            "majority-class accuracy": (result.get("majority_baseline") or {}).get("accuracy")}


def _label_names(labels) -> list[str]:
    # matplotlib's default font has no CJK glyphs: label ids stand in for non-ASCII names (as recipes/eval.py does)
    pairs = labels.items() if isinstance(labels, dict) else enumerate(labels)
    return [str(name).strip() if str(name).isascii() else str(i) for i, name in pairs]


def eval_section(runs: list[Run], out: Path) -> Section:
    evals = {r.name: r.json("eval/eval_results.json") for r in runs}
    clfs = {r.name: r.json("classify/eval_results.json") for r in runs}
    lines = ["### Language modelling (eval)", "", *missing(evals, "eval/eval_results.json"),
             *table("set", {run: e and {name: {
                 "language": v.get("language"), "perplexity": v["perplexity"], "bits/byte": v["bits_per_byte"],
                 "bytes/token": v.get("bytes_per_token"), "tokens": v.get("tokens")}
                 for name, v in e.get("language_modeling", {}).items()} for run, e in evals.items()}),
             "### Few-shot classification (eval)", "",
             *table("set", {run: e and {f"{name} {k}-shot": scores({"majority_baseline": c.get("majority_baseline"),
                                                                    **s})
                                        for name, c in e.get("classification", {}).items()
                                        for k, s in c["shots"].items()} for run, e in evals.items()}),
             "### Fine-tuned classifier (classify)", "", *missing(clfs, "classify/eval_results.json"),
             *table("split", {run: c and {split: scores(c[split]) for split in ("validation", "test") if split in c}
                              for run, c in clfs.items()})]
    images = []
    for run, e in evals.items():
        for name, c in (e or {}).get("classification", {}).items():
            for k, s in c["shots"].items():
                if not s.get("confusion_matrix"):
                    continue
                title = f"{run}: {c.get('dataset_name', name)}, {k}-shot"
                images.append((f"confusion_{run}_{name}_{k}shot.png", title, s["confusion_matrix"],
                               _label_names(c["labels"])))
    for run, c in clfs.items():
        for split in ("validation", "test"):
            if c and (c.get(split) or {}).get("confusion_matrix"):
                images.append((f"confusion_{run}_classify_{split}.png", f"{run}: classifier, {split}",
                               c[split]["confusion_matrix"], _label_names(c["labels"])))
    if images:
        lines += ["### Confusion matrices (rows: true label)", ""]
    for file, title, matrix, names in images:
        confusion_png(matrix, names, title, out / file)
        lines.append(f"![{title}]({file})")
    return Section("Evaluation", lines + [""], {r.name: bool(evals[r.name] or clfs[r.name]) for r in runs})


# --- 6. sample generations ------------------------------------------------------------------------------------------


def samples_section(runs: list[Run], out: Path, max_samples: int = 20) -> Section:
    gens = {r.name: r.jsonl("eval/generations.jsonl") for r in runs}
    evals = {r.name: r.json("eval/eval_results.json") for r in runs}
    sft = {r.name: {st: r.json(f"{st}/sample_generation.json") for st in SFT} for r in runs}
    sft = {run: {st: g for st, g in per.items() if g} for run, per in sft.items()}
    lines = ["### Chat answers (eval)", "", *missing(gens, "eval/generations.jsonl"),
             *table("language", {run: e and {lang: {
                 "prompts": g["prompts"], "stopped at EOS": pct(g["stopped_share"], 1),
                 "mean answer tokens": g["mean_answer_tokens"]}
                 for lang, g in (e.get("generation") or {}).get("per_language", {}).items()}
                 for run, e in evals.items()}),
             *table("prompt", {run: g and {f"{i}. {row['prompt']}": {
                 "language": row.get("language"), "answer": row["answer"], "stopped at EOS": row.get("stopped_at_eos")}
                 for i, row in enumerate(g[:max_samples], 1)} for run, g in gens.items()}),
             "### After SFT (sample_generation.json)", "", *missing(sft, "sft-lora|sft/sample_generation.json"),
             *table("stage", {run: {st: {"prompt": g.get("prompt"), "completion": g.get("completion"),
                                         "stopped at": g.get("stopped_at")} for st, g in per.items()}
                              for run, per in sft.items()})]
    return Section("Sample generations", lines, {r.name: bool(gens[r.name] or sft[r.name]) for r in runs})


# --- 7. resolved configs --------------------------------------------------------------------------------------------


def config_section(runs: list[Run], out: Path, skip: set[Path] = frozenset()) -> Section:
    lines, filled = [], {}
    for r in runs:
        folders = [d for d in sorted(r.path.iterdir()) if (d / "resolved_config.yaml").is_file()
                   and not d.name.startswith(".") and d.name != "report" and d.resolve() not in skip]
        folders.sort(key=lambda d: (CONFIG_ORDER.index(d.name) if d.name in CONFIG_ORDER else len(CONFIG_ORDER)))
        filled[r.name] = bool(folders)
        for d in folders:
            text = (d / "resolved_config.yaml").read_text(encoding="utf-8").rstrip("\n")
            who = f" ({r.name})" if len(runs) > 1 else ""
            lines += [f"<details><summary><code>{d.name}/resolved_config.yaml</code>{who}</summary>", "", "```yaml",
                      text, "```", "", "</details>", ""]
    return Section("Resolved configs", missing(filled, "*/resolved_config.yaml") + lines, filled)


# --- the page -------------------------------------------------------------------------------------------------------


def build_report(runs: list[Run], out: Path, skip: set[Path] = frozenset(), max_samples: int = 20) -> str:
    """Draw the PNGs into `out` and return report.md."""
    sections = [data_section(runs, out), tokenizer_section(runs, out), curves_section(runs, out),
                throughput_section(runs, out), eval_section(runs, out), samples_section(runs, out, max_samples),
                config_section(runs, out, skip)]
    names = [r.name for r in runs]
    lines = [f"# Run report: {' vs '.join(f'`{n}`' for n in names)}", "",
             "Read from the run folder" + ("s" if len(runs) > 1 else "") + " only (reports, TensorBoard events, "
             "resolved configs); written by `make report`.", "",
             "| section | " + " | ".join(f"`{n}`" for n in names) + " |", "|---|" + "---|" * len(names)]
    lines += [f"| {i}. [{s.title}](#{i}-{s.title.lower().replace(' ', '-')}) | "
              + " | ".join("filled" if s.filled[n] else "not in this run" if len(runs) == 1 else "missing"
                           for n in names) + " |"
              for i, s in enumerate(sections, 1)]
    for i, s in enumerate(sections, 1):
        while s.lines and not s.lines[-1]:
            s.lines.pop()
        lines += ["", f"## {i}. {s.title}", "", *s.lines]
    return "\n".join(lines).rstrip("\n") + "\n"
