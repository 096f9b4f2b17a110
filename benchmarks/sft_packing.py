"""Real-token share and tokens/s of SFT with packing (TRL bfd) vs without (dynamic padding), same data, model, steps.

    python benchmarks/sft_packing.py [--model outputs/tiny/pretrain] [--max_steps 30] [--rounds 2]

Runs recipes/sft.py itself (configs/sft/tiny.yaml: assistant-only loss, 512-token rows, 4 rows per step) twice per
round, alternating packing on and off, with evaluation and checkpoints off. The recipe logs, per logging window, the
share of real tokens in the slots a batch occupies (packed: rows x max_length; padded: rows x longest row) and real
tokens/s. Best tokens/s of the rounds is reported (the machine may be shared). Prints one Markdown row for
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # the recipes are modules of the repo root, not of the installed package
from recipes import sft  # noqa: E402


def run(sft, config: Path, model: str, packing: bool, max_steps: int, out: Path) -> dict:
    sft.main(["--config", str(config), "--model_name_or_path", model, "--output_dir", str(out),
              "--packing", str(packing).lower(), "--max_steps", str(max_steps), "--logging_steps", str(max_steps)])
    log = json.loads((out / "trainer_state.json").read_text())["log_history"]
    window = next(e for e in log if "real_token_share" in e)
    return {"real_token_share": window["real_token_share"], "tokens_per_second": window["tokens_per_second"],
            "tokens": window["tokens_seen"]}


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("--model", default="outputs/tiny/pretrain", help="base model folder (make pretrain)")
    cli.add_argument("--config", default="configs/sft/tiny.yaml", help="the SFT recipe whose data and shapes are used")
    cli.add_argument("--max_steps", type=int, default=30)
    cli.add_argument("--rounds", type=int, default=2)
    cli.add_argument("--tiny", action="store_true", help="seconds: 2 steps, 1 round (the tests)")
    args = cli.parse_args()
    if args.tiny:
        args.max_steps, args.rounds = 2, 1

    config = yaml.safe_load((REPO_ROOT / args.config).read_text())
    config.update({"eval_strategy": "no", "eval_on_start": False, "test_split_size": 0, "load_best_model_at_end": False,
                   "early_stopping_patience": None, "save_strategy": "no", "report_to": "none", "sample_prompt": None})
    results: dict[bool, list[dict]] = {True: [], False: []}
    with tempfile.TemporaryDirectory(prefix="sft_packing_") as tmp:
        work = Path(tmp)
        bench_config = work / "bench.yaml"
        bench_config.write_text(yaml.safe_dump(config, allow_unicode=True))
        for r in range(args.rounds):
            for packing in (True, False):
                out = work / f"{packing}-{r}"
                results[packing].append(run(sft, bench_config, args.model, packing, args.max_steps, out))
                print(f"round {r} packing={packing}: {results[packing][-1]}", flush=True)
    best = {p: max(rs, key=lambda x: x["tokens_per_second"]) for p, rs in results.items()}
    packed, padded = best[True], best[False]
    speedup = packed["tokens_per_second"] / padded["tokens_per_second"]
    machine = f"{platform.machine()}, {os.cpu_count()} cores, " + (
        "GPU" if __import__("torch").cuda.is_available() else "no GPU")
    print(json.dumps({"packed": packed, "padded": padded, "speedup": round(speedup, 2)}, indent=2))
    print(f"ratio packed/padded real tokens/s: {speedup:.2f}x (real-token share {packed['real_token_share']:.1%} vs "
          f"{padded['real_token_share']:.1%})")
    print(f"| {datetime.date.today()} | SFT packing (`benchmarks/sft_packing.py`, {args.config}: tiny model, "
          f"max_length {config['max_length']}, {config['per_device_train_batch_size']} rows/step, {args.max_steps} "
          f"steps, best of {args.rounds}) real-token share / real tokens/s | {machine} | packed (bfd): "
          f"{packed['real_token_share']:.1%}, {packed['tokens_per_second']:,.0f} tok/s | padded: "
          f"{padded['real_token_share']:.1%}, {padded['tokens_per_second']:,.0f} tok/s | **{speedup:.2f}x** tok/s | "
          f"`.venv/bin/python benchmarks/sft_packing.py` |")


if __name__ == "__main__":
    main()
