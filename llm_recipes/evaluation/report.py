"""eval_results.json, eval_report.md, generations.jsonl and the PNGs of recipes/eval.py."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402


def confusion_png(matrix: list[list[int]], names: list[str], title: str, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(3.6, 3.2), dpi=120)
    ax.imshow(matrix, cmap="Blues")
    top = max(max(row) for row in matrix) or 1
    for i, row in enumerate(matrix):
        for j, value in enumerate(row):
            ax.text(j, i, str(value), ha="center", va="center", color="white" if value > top / 2 else "black")
    ax.set_xticks(range(len(names)), names)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _lm_png(lm: dict, path: Path) -> None:
    names = list(lm)
    fig, axes = plt.subplots(1, 2, figsize=(6.4, 2.8), dpi=120)
    for ax, key, label in ((axes[0], "bits_per_byte", "bits per byte (lower is better)"),
                           (axes[1], "perplexity", "token perplexity")):
        values = [lm[n][key] for n in names]
        ax.bar(names, values, color="#4c72b0")
        for i, v in enumerate(values):
            ax.text(i, v, f"{v:.3g}", ha="center", va="bottom", fontsize=8)
        ax.set_title(label, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _markdown(results: dict) -> str:
    lines = [f"# Evaluation of `{results['model']}`", "", f"Model kind: {results['kind']}; context "
             f"{results['context_length']} tokens.", ""]
    lm = results.get("language_modeling")
    if lm:
        lines += ["## Language modelling (held-out text)", "",
                  "Bits per byte compares models with different tokenizers; perplexity is per token of this model's "
                  "tokenizer.", "", "| set | documents | tokens | bytes/token | perplexity | bits/byte |",
                  "|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {n} | {r['documents']:,} | {r['tokens']:,} | {r['bytes_per_token']:.2f} | "
                  f"{r['perplexity']:.2f} | {r['bits_per_byte']:.4f} |" for n, r in lm.items()]
        lines += ["", "![bits per byte per language](lm_per_language.png)", ""]
    for name, c in results.get("classification", {}).items():
        base = c["majority_baseline"]
        lines += [f"## Classification: {c['dataset_name']} ({c['language']})", "",
                  f"{c['examples']:,} examples, demonstrations from a disjoint pool of {c['demo_pool']:,}; labels "
                  f"{c['labels']}; dropped {c['dropped'] or 'none'}.", "",
                  "| shots | accuracy | precision (macro) | recall (macro) | F1 (macro) | F1 per class |",
                  "|---:|---:|---:|---:|---:|---|"]
        for k, s in c["shots"].items():
            per_class = ", ".join(f"{v:.3f}" for v in s["f1_per_class"])
            lines.append(f"| {k} | {s['accuracy']:.4f} | {s['precision_macro']:.4f} | {s['recall_macro']:.4f} | "
                         f"{s['f1_macro']:.4f} | {per_class} |")
        lines.append(f"| majority class ({c['labels'][str(base['predicts'])].strip()}) | {base['accuracy']:.4f} | | | "
                     f"{base['f1_macro']:.4f} | |")
        lines += [""] + [f"![{name} {k}-shot](confusion_{name}_{k}shot.png)" for k in c["shots"]] + [""]
        first = next(iter(c["shots"].values()))
        lines += ["Example prompt:", "", "```", first["example_prompt"], "```", ""]
    gen = results.get("generation")
    if gen:
        lines += ["## Chat generation", "", f"{gen['prompts']} prompts through the chat template and "
                  f"generation_config, at most {gen['max_new_tokens']} new tokens.", "",
                  "| language | prompts | stopped at EOS | mean answer tokens |", "|---|---:|---:|---:|"]
        lines += [f"| {lang} | {g['prompts']} | {g['stopped_share']:.0%} | {g['mean_answer_tokens']:.1f} |"
                  for lang, g in gen["per_language"].items()]
        lines += ["", "Answers: `generations.jsonl`.", ""]
    le = results.get("lm_eval")
    if le:
        lines += ["## lm-evaluation-harness", "", f"`{le['command']}`", "", "| task | metric | value |",
                  "|---|---|---:|"]
        for task, metrics in le["results"].items():
            lines += [f"| {task} | {m} | {v:.4f} |" for m, v in metrics.items() if isinstance(v, float)]
        lines.append("")
    return "\n".join(lines)


def write_report(results: dict, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    answers = (results.get("generation") or {}).pop("answers", None)
    if answers is not None:
        with open(folder / "generations.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(a, ensure_ascii=False) + "\n" for a in answers)
    if results.get("language_modeling"):
        _lm_png(results["language_modeling"], folder / "lm_per_language.png")
    for name, c in results.get("classification", {}).items():
        # matplotlib's default font has no CJK glyphs: label ids stand in for non-ASCII verbalisers
        names = [w.strip() if w.isascii() else k for k, w in c["labels"].items()]
        for k, s in c["shots"].items():
            confusion_png(s["confusion_matrix"], names, f"{c['dataset_name']}, {k}-shot",
                           folder / f"confusion_{name}_{k}shot.png")
    (folder / "eval_results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    (folder / "eval_report.md").write_text(_markdown(results) + "\n", encoding="utf-8")
