"""What EDA augmentation buys a classifier: test accuracy with and without it at 10 %, 30 % and 100 % of the train
split, mean and spread over seeds, beside the majority-class baseline of the same test split.

    python benchmarks/classify_augment.py --config configs/classify/sst2_en.yaml --model outputs/tiny/sft

Every run is recipes/classify.py itself with the recipe's YAML; only train_fraction, augment_copies, the training
seed (and, for the control, the epochs) change. The validation and test splits are the same rows in every run
(data_seed fixed), so the accuracies compare like for like. An epoch over augmented data has (1 + copies) times the
steps, so a control column trains without augmentation for (1 + copies) times the epochs: the same number of steps.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import datasets

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the recipes are modules of the repo root, not of the installed package
from recipes import classify  # noqa: E402


def run(args, fraction: float, copies: int, seed: int, out: Path, epochs: float) -> dict:
    classify.main(["--config", args.config, "--model_name_or_path", args.model, "--output_dir", str(out),
                   "--train_fraction", str(fraction), "--augment_copies", str(copies), "--seed", str(seed),
                   "--data_seed", str(args.data_seed), "--report_to", "none", "--save_total_limit", "1",
                   "--num_train_epochs", str(epochs), *args.extra])
    return json.loads((out / "eval_results.json").read_text())["test"]


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("--config", default="configs/classify/sst2_en.yaml")
    cli.add_argument("--model", default="outputs/tiny/sft")
    cli.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.3, 1.0])
    cli.add_argument("--copies", type=int, default=2, help="EDA copies per train example in the augmented runs")
    cli.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    cli.add_argument("--data_seed", type=int, default=42)
    cli.add_argument("--tiny", action="store_true", help="seconds: 5 %% of train, 1 seed, 1 epoch (the tests)")
    args = cli.parse_args()
    datasets.disable_progress_bars()

    epochs = 1 if args.tiny else classify.make_parser().parse(["--config", args.config])[2].num_train_epochs
    args.extra = []
    if args.tiny:  # 30 train, 44 validation and 44 test sentences of 32 tokens
        args.fractions, args.seeds = [0.05], [1]
        args.extra = ["--validation_split_size", "0.05", "--test_split_size", "0.05", "--max_length", "32"]
    arms = {"plain": (0, epochs), "same steps": (0, epochs * (1 + args.copies)), "EDA": (args.copies, epochs)}
    rows, majority = [], None
    with tempfile.TemporaryDirectory() as work:
        for fraction in args.fractions:
            scores = {arm: [] for arm in arms}
            for seed in args.seeds:
                for arm, (copies, n_epochs) in arms.items():
                    test = run(args, fraction, copies, seed, Path(work) / f"{fraction}-{arm}-{seed}", n_epochs)
                    scores[arm].append(test["accuracy"])
                    majority = test["majority_baseline"]["accuracy"]
                    print(f"fraction {fraction} {arm} seed {seed}: accuracy {test['accuracy']:.4f}", flush=True)
            rows.append((fraction, scores))

    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores; {args.config}, model {args.model}, "
          f"seeds {args.seeds}, EDA copies {args.copies}; test split: {test['rows']} rows")
    print(f"| train share | no augmentation ({epochs:g} epochs) | no augmentation, same steps as EDA "
          f"({epochs * (1 + args.copies):g} epochs) | EDA ({args.copies} copies, {epochs:g} epochs) | EDA minus the "
          "stronger no-augmentation arm | majority class |")
    print("|---|---:|---:|---:|---:|---:|")

    def cell(values):
        return f"{statistics.mean(values):.1%} ({min(values):.1%}-{max(values):.1%})"

    for fraction, scores in rows:
        baseline = max(("plain", "same steps"), key=lambda arm: statistics.mean(scores[arm]))
        diff = [e - b for e, b in zip(scores["EDA"], scores[baseline])]
        print(f"| {fraction:.0%} | {cell(scores['plain'])} | {cell(scores['same steps'])} | {cell(scores['EDA'])} | "
              f"{statistics.mean(diff) * 100:+.1f} pt ({min(diff) * 100:+.1f} to {max(diff) * 100:+.1f}) | "
              f"{majority:.1%} |")
    for fraction, scores in rows:
        stronger = max(statistics.mean(scores["plain"]), statistics.mean(scores["same steps"]))
        print(f"ratio EDA/stronger no-augmentation arm, test accuracy at {fraction:.0%} of train: "
              f"{statistics.mean(scores['EDA']) / stronger:.3f}x")


if __name__ == "__main__":
    main()
