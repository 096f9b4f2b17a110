"""Does DPO do what it is for? Held-out preference pairs scored under the SFT model (the baseline: DPO's reference,
in the same run, on the same pairs) and under the DPO policy, over several seeds.

    python benchmarks/dpo_preference.py --model outputs/tiny/sft            (after make sft; ~15 min on 2 cores)

Every run is recipes/dpo.py itself with configs/dpo/tiny.yaml (full) and tiny_lora.yaml (LoRA); only the seed
changes, for training and for the held-out split alike (data_seed = seed), so each run holds out other pairs.
Printed per arm: the median and range over seeds of the held-out reward accuracy (chosen gained more log-likelihood
than rejected), the log-likelihood margin log p(chosen) - log p(rejected) of SFT and of DPO and its gain, and the share
of pairs each model ranks the right way round.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import datasets

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the recipes are modules of the repo root, not of the installed package
from recipes import dpo  # noqa: E402

ARMS = {"full": "configs/dpo/tiny.yaml", "lora": "configs/dpo/tiny_lora.yaml"}


def run(config: str, model: str, seed: int, out: Path, extra: list[str]) -> dict:
    start = time.perf_counter()
    dpo.main(["--config", str(REPO / config), "--model_name_or_path", model, "--output_dir", str(out),
              "--seed", str(seed), "--data_seed", str(seed), "--report_to", "none", "--save_strategy", "no",
              "--eval_strategy", "no", "--eval_on_start", "false", *extra])
    held = json.loads((out / "dpo_metrics.json").read_text())["held_out"]
    return {**held, "seconds": time.perf_counter() - start}


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("--model", default="outputs/tiny/sft")
    cli.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    cli.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    cli.add_argument("--tiny", action="store_true", help="seconds: 1 seed, 40 pairs per language, 2 steps "
                                                         "(the tests)")
    args = cli.parse_args()
    datasets.disable_progress_bars()
    data = Path(os.environ.get("DATA_DIR", REPO.parent / "shared" / "data")) / "preference"
    sources = [json.dumps({"path": str(data / f"dpo_{lang}_demo.json"), "format": "sharegpt", "max_samples": 40})
               for lang in ("en", "zh")]
    extra = ["--max_steps", "2", "--per_device_train_batch_size", "2", "--datasets", *sources] if args.tiny else []
    if args.tiny:
        args.seeds = [1]

    results = {arm: [] for arm in args.arms}
    with tempfile.TemporaryDirectory() as work:
        for seed in args.seeds:  # arms alternate, so a slow spell of the machine hits both
            for arm in args.arms:
                r = run(ARMS[arm], args.model, seed, Path(work) / f"{arm}-{seed}", extra)
                results[arm].append(r)
                print(f"{arm} seed {seed}: reward accuracy {r['reward_accuracy']:.3f}, margin gain "
                      f"{r['logp_margin_gain']:+.2f} ± {r['logp_margin_gain_ci95']:.2f} over {r['pairs']} pairs, "
                      f"{r['seconds']:.0f} s", flush=True)

    def cell(rows, key, fmt):
        values = [r[key] for r in rows]
        return f"{format(statistics.median(values), fmt)} ({format(min(values), fmt)} to {format(max(values), fmt)})"

    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores; model {args.model}; seeds {args.seeds}; "
          "median (min to max) over seeds")
    print("| arm | held-out pairs | reward accuracy | SFT margin | DPO margin | margin gain | runs with gain > 0 "
          "(95 % CI above 0) | SFT ranks chosen first | DPO ranks chosen first | s/run |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for arm, rows in results.items():
        positive = sum(r["logp_margin_gain"] > 0 for r in rows)
        sure = sum(r["logp_margin_gain"] - r["logp_margin_gain_ci95"] > 0 for r in rows)
        print(f"| {arm} | {cell(rows, 'pairs', '.0f')} | {cell(rows, 'reward_accuracy', '.3f')} | "
              f"{cell(rows, 'sft_logp_margin', '.1f')} | {cell(rows, 'dpo_logp_margin', '.1f')} | "
              f"{cell(rows, 'logp_margin_gain', '+.2f')} | {positive}/{len(rows)} ({sure}/{len(rows)}) | "
              f"{cell(rows, 'sft_prefers_chosen', '.3f')} | {cell(rows, 'dpo_prefers_chosen', '.3f')} | "
              f"{statistics.median(r['seconds'] for r in rows):.0f} |")
    for arm, rows in results.items():
        shares = [r["dpo_prefers_chosen"] / r["sft_prefers_chosen"] for r in rows if r["sft_prefers_chosen"]]
        print(f"ratio DPO/SFT share of held-out pairs ranked chosen-first, {arm}: "
              + (f"{statistics.median(shares):.3f}x" if shares else "n/a (SFT ranks none chosen-first)")
              + f"; margin gain {statistics.median(r['logp_margin_gain'] for r in rows):+.2f} nats")


if __name__ == "__main__":
    main()
