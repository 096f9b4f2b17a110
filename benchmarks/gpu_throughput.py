"""Pretraining throughput on one GPU: tokens/s and MFU of a preset under ZeRO-3 bf16, against the card's bf16 peak.

    python benchmarks/gpu_throughput.py --tokenizer outputs/tiny/tokenizer                    # 1B preset, a GPU
    python benchmarks/gpu_throughput.py --tokenizer <dir> --preset tiny --block_size 128 \\
        --micro_batch 4 --steps 4 --warmup 1 --cpu                                          # CPU smoke (tests)

What runs is recipes/pretrain.py itself under `accelerate launch` with launch/accelerate/zero3.yaml and the preset's
configs/pretrain/<preset>.yaml (optimizer, activation checkpointing and attention as the YAML has them; `auto`
attention is flash-attention when installed, else sdpa), one process, gradient accumulation 1, on random token
blocks saved the way recipes/pack.py saves them (throughput does not depend on the text; the tokenizer only sets the
vocabulary). Tokens/s is the recipe's own log (tokens over the wall time between two logs); MFU is the recipe's too:
FLOPs per token (6N plus attention, llm_recipes/model_info.py) x tokens/s over the card's dense bf16 peak
(llm_recipes/training.py's table: H100 / H200 989 TFLOP/s). The first `warmup` steps (allocator, kernel selection)
are left out; the median of the others and their range are printed, and written to --out as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def random_packed(tokenizer_dir: str, out: Path, blocks: int, block_size: int, seed: int = 0) -> None:
    """A packed dataset as recipes/pack.py writes it (input_ids blocks + stats.json), of uniformly random tokens."""
    import datasets
    import numpy as np
    from transformers import AutoTokenizer

    from llm_recipes.packing import tokenizer_fingerprint

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    rng = np.random.default_rng(seed)
    splits, stats = {}, {}
    for name, n in (("train", blocks), ("validation", 1)):
        ids = rng.integers(0, len(tokenizer), size=(n, block_size), dtype=np.int64)
        splits[name] = datasets.Dataset.from_dict({"input_ids": ids.tolist()})
        stats[name] = {"blocks": n, "block_size": block_size, "packed_tokens": n * block_size, "tokens": n * block_size}
    datasets.DatasetDict(splits).save_to_disk(str(out))
    (out / "stats.json").write_text(json.dumps({"splits": stats, "tokenizer": {
        "name_or_path": tokenizer_dir, "vocab_size": len(tokenizer), "eos_token_id": tokenizer.eos_token_id,
        "sha256": tokenizer_fingerprint(tokenizer)}}, indent=2))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        data, out = Path(tmp) / "packed", Path(tmp) / "run"
        random_packed(args.tokenizer, data, blocks=args.micro_batch * args.steps, block_size=args.block_size)
        launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                  str(REPO / "launch/accelerate/zero3.yaml"), "--num_processes", "1",
                  "--main_process_port", str(free_port())]  # not torchrun's 29500: another launch may hold it
        if args.cpu:
            launch += ["--num_cpu_threads_per_process", str(os.cpu_count() or 1)]
        recipe = [str(REPO / "recipes/pretrain.py"), "--config", str(REPO / f"configs/pretrain/{args.preset}.yaml"),
                  "--dataset_path", str(data), "--tokenizer_name_or_path", args.tokenizer, "--output_dir", str(out),
                  "--max_tokens", str(args.steps * args.micro_batch * args.block_size), "--per_device_train_batch_size",
                  str(args.micro_batch), "--gradient_accumulation_steps", "1", "--logging_steps", "1",
                  "--save_strategy", "no", "--eval_strategy", "no", "--report_to", "none",
                  "--dataloader_num_workers", "0", "--warmup_steps", "0", "--bf16", str(not args.cpu).lower()]
        done = subprocess.run(launch + recipe, capture_output=True, text=True, cwd=REPO)
        if done.returncode:
            sys.stderr.write(done.stdout[-4000:] + done.stderr[-8000:])
            raise SystemExit(f"pretrain.py failed with exit code {done.returncode}")
        logs = [e for e in json.loads((out / "trainer_state.json").read_text())["log_history"] if "tokens_per_second" in e]
    timed = logs[args.warmup:]
    tps = [e["tokens_per_second"] for e in timed]
    mfu = [e["mfu"] for e in timed if "mfu" in e]
    result = {"preset": args.preset, "micro_batch": args.micro_batch, "block_size": args.block_size,
              "steps_timed": len(timed), "tokens_per_second": statistics.median(tps), "tps_range": [min(tps), max(tps)],
              "mfu": statistics.median(mfu) if mfu else None, "device": device_name()}
    return result


def device_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", required=True, help="tokenizer folder (sets the vocabulary)")
    parser.add_argument("--preset", default="1b", help="configs/pretrain/<preset>.yaml (and its model preset)")
    parser.add_argument("--micro_batch", type=int, default=8, help="sequences per step (1b.yaml: 8)")
    parser.add_argument("--block_size", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=3, help="first logged steps left out")
    parser.add_argument("--cpu", action="store_true", help="no GPU: fp32 (the smoke run of the tests)")
    parser.add_argument("--out", default=None, help="write the result here as JSON")
    args = parser.parse_args(argv)
    result = run(args)
    print(f"{result['preset']} ZeRO-3 on {result['device']}: micro-batch {args.micro_batch} x {args.block_size}, "
          f"{result['tokens_per_second']:,.0f} tokens/s per GPU (range {result['tps_range'][0]:,.0f}-"
          f"{result['tps_range'][1]:,.0f}, {result['steps_timed']} steps)"
          + (f", MFU {result['mfu']:.1%} of the bf16 peak" if result["mfu"] is not None else ""))
    print("ratio model FLOP/s / the card's dense bf16 peak (MFU): "
          + (f"{result['mfu']:.3f}x" if result["mfu"] is not None else "n/a (no peak for this device)"))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
