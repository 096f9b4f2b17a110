"""What the reference model costs: full DPO (a frozen second copy) against LoRA DPO (the adapter-disabled model is
the reference, no copy), same model, data, batch and steps. Peak GPU memory, parameter elements alive, tokens/s.

    python benchmarks/dpo_memory.py --preset 1b --tokenizer outputs/tiny/tokenizer          (on a GPU)
    python benchmarks/dpo_memory.py --preset tiny --steps 10 --max_length 256                (CPU: elements only)

Each run is recipes/dpo.py itself (configs/dpo/tiny.yaml or tiny_lora.yaml, overridden for size) in a process of its
own, arms alternating, on a random-init model of the preset (the tokenizer's chat template is all DPO needs of it).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
ARMS = {"full": "configs/dpo/tiny.yaml", "lora": "configs/dpo/tiny_lora.yaml"}


def build_model(preset: str, tokenizer_dir: str, out: Path) -> None:
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    from llm_recipes.model import ModelArguments, build_llama_config

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    model = LlamaForCausalLM(build_llama_config(ModelArguments(model_preset=preset), tokenizer=tokenizer))
    model.to(torch.bfloat16 if torch.cuda.is_available() else torch.float32).save_pretrained(out)
    tokenizer.save_pretrained(out)


def one_run(args) -> None:
    """Child process: one DPO run, then its measurements as one JSON line."""
    import datasets
    import torch

    from recipes import dpo

    datasets.disable_progress_bars()
    gpu = torch.cuda.is_available()
    start = time.perf_counter()
    trainer = dpo.main(["--config", str(REPO / ARMS[args.arm]), "--model_name_or_path", args.model, "--output_dir",
                        args.out, "--datasets", *args.data, "--max_steps", str(args.steps), "--max_length",
                        str(args.max_length), "--max_prompt_length", str(args.max_length // 2),
                        "--per_device_train_batch_size", str(args.batch_size), "--eval_strategy", "no",
                        "--eval_on_start", "false", "--test_split_size", "0", "--save_strategy", "no",
                        "--report_to", "none", "--logging_steps", "5", "--dtype", "bfloat16" if gpu else "float32",
                        "--bf16", str(gpu).lower(), "--dataloader_pin_memory", str(gpu).lower(),
                        "--activation_checkpointing", str(args.activation_checkpointing).lower()])
    seconds = time.perf_counter() - start
    gc.collect()
    elements = sum(p.numel() for p in {id(o): o for o in gc.get_objects()
                                       if isinstance(o, torch.nn.Parameter)}.values())
    speeds = [e["tokens_per_second"] for e in trainer.state.log_history if "tokens_per_second" in e][1:]  # warm
    print("RESULT " + json.dumps({
        "arm": args.arm, "parameter_elements": elements, "seconds": seconds,
        "tokens_per_second": statistics.median(speeds) if speeds else None,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if gpu else None,
        "device": torch.cuda.get_device_name() if gpu else platform.machine()}), flush=True)


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("--preset", default="1b")
    cli.add_argument("--tokenizer", default="outputs/tiny/tokenizer")
    cli.add_argument("--data", nargs="+", default=[os.path.expandvars(f"{os.environ.get('DATA_DIR', '../shared/data')}"
                                                                      f"/preference/dpo_{lang}_demo.json")
                                                   for lang in ("en", "zh")])
    cli.add_argument("--steps", type=int, default=20)
    cli.add_argument("--batch_size", type=int, default=4)
    cli.add_argument("--max_length", type=int, default=1024)
    cli.add_argument("--rounds", type=int, default=2)
    cli.add_argument("--activation_checkpointing", action="store_true", help="recompute activations in backward")
    cli.add_argument("--tiny", action="store_true", help="seconds: tiny preset, 40 pairs per file, 2 steps, 2 pairs "
                                                         "x 128 tokens, 1 round (the tests)")
    cli.add_argument("--arm", choices=list(ARMS), help=argparse.SUPPRESS)  # child process
    cli.add_argument("--model", help=argparse.SUPPRESS)
    cli.add_argument("--out", help=argparse.SUPPRESS)
    args = cli.parse_args()
    if args.arm:
        return one_run(args)
    if args.tiny:
        args.preset, args.steps, args.batch_size, args.max_length, args.rounds = "tiny", 2, 2, 128, 1
        args.data = [json.dumps({"path": p, "format": "sharegpt", "max_samples": 40}) for p in args.data]

    results = {arm: [] for arm in ARMS}
    with tempfile.TemporaryDirectory() as work:
        model = Path(work) / "model"
        build_model(args.preset, args.tokenizer, model)
        for round_ in range(args.rounds):
            for arm in ARMS:
                cmd = [sys.executable, __file__, "--arm", arm, "--model", str(model), "--out", f"{work}/{arm}",
                       "--data", *args.data, "--steps", str(args.steps), "--batch_size", str(args.batch_size),
                       "--max_length", str(args.max_length)] + (["--activation_checkpointing"] *
                                                                args.activation_checkpointing)
                done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
                line = next((l for l in done.stdout.splitlines() if l.startswith("RESULT ")), None)
                if line is None:
                    sys.exit(f"{arm} failed:\n{done.stderr[-3000:]}")
                results[arm].append(json.loads(line[7:]))
                print(f"round {round_} {arm}: {results[arm][-1]}", flush=True)

    full, lora = results["full"], results["lora"]
    med = lambda rows, k: statistics.median(r[k] for r in rows) if rows[0][k] is not None else None  # noqa: E731
    print(f"\n{full[0]['device']}; preset {args.preset}, batch {args.batch_size} pairs x {args.max_length} tokens, "
          f"{args.steps} steps, {args.rounds} alternating rounds, medians"
          + (", activation checkpointing" if args.activation_checkpointing else ""))
    print("| arm | parameter elements alive | peak GPU memory (GiB) | tokens/s |\n|---|---:|---:|---:|")
    for arm, rows in results.items():
        peak = med(rows, "peak_gib")
        speed = med(rows, "tokens_per_second")
        print(f"| {arm} | {med(rows, 'parameter_elements'):,.0f} | {'n/a' if peak is None else f'{peak:.2f}'} | "
              f"{'n/a' if speed is None else f'{speed:,.0f}'} |")
    ratio = med(lora, "parameter_elements") / med(full, "parameter_elements")
    print(f"ratio LoRA/full: parameter elements {ratio:.3f}x"
          + (f", peak memory {med(lora, 'peak_gib') / med(full, 'peak_gib'):.3f}x" if full[0]["peak_gib"] else ""))


if __name__ == "__main__":
    main()
