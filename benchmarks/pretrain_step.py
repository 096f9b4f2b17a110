"""Step time of recipes/pretrain.py's Trainer path vs a bare PyTorch loop: same model, batches, AdamW, same process.

    python benchmarks/pretrain_step.py --preset 160m --block_size 128 --batch_size 4 --steps 12
    python benchmarks/pretrain_step.py --preset tiny --profile     # fixed per-step overhead, and where it goes

Both loops start from the same initial weights and see the same batches (random token ids: step time does not depend
on their values); the first `--warmup` steps of each are not timed. Reported: median step time of each and the ratio.
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import io
import os
import platform
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

import datasets
import torch
from transformers import LlamaForCausalLM, TrainerCallback, get_scheduler
from transformers.trainer_callback import ProgressCallback

from llm_recipes.recipe_loader import load_recipe
from llm_recipes.model import ModelArguments, build_llama_config, count_parameters, training_flops_per_token

REPO = Path(__file__).resolve().parent.parent


class StepTimer(TrainerCallback):
    """Time between consecutive step ends: the whole step, data loading and callbacks included."""

    def __init__(self):
        self.times, self._last = [], None

    def on_step_end(self, args, state, control, **kwargs):
        now = time.perf_counter()
        if self._last is not None:
            self.times.append(now - self._last)
        self._last = now


def trainer_steps(recipe, model, data, args, workdir) -> list[float]:
    config = recipe.PretrainConfig(
        output_dir=str(workdir), per_device_train_batch_size=args.batch_size, max_steps=args.steps + args.warmup,
        learning_rate=3e-4, weight_decay=0.1, adam_beta2=0.95, max_grad_norm=1.0, lr_scheduler_type="cosine",
        warmup_steps=2, logging_steps=10, save_strategy="no", eval_strategy="no", report_to="none", seed=0,
        dataloader_num_workers=0,
    )
    tokens_per_step = args.batch_size * args.block_size
    n = count_parameters(model).total
    timer = StepTimer()
    trainer = recipe.PretrainTrainer(
        model=model, args=config, train_dataset=data, data_collator=collate, callbacks=[timer],
        tokens_per_step=tokens_per_step, flops_per_token=training_flops_per_token(model.config, n, args.block_size),
        peak_tflops=None,
    )
    trainer.remove_callback(ProgressCallback)  # the bar redraws on a terminal; not part of a training step's cost
    trainer.train()
    return timer.times[args.warmup - 1 :]  # the first step has no predecessor: already excluded


def collate(rows):
    ids = torch.tensor([r["input_ids"] for r in rows])
    return {"input_ids": ids, "labels": ids}


def bare_steps(model, data, args) -> list[float]:
    """The minimal loop a user would write: forward, backward, clip, AdamW (no decay on norms), cosine schedule."""
    decay = [p for n, p in model.named_parameters() if "norm" not in n]
    no_decay = [p for n, p in model.named_parameters() if "norm" in n]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=3e-4, betas=(0.9, 0.95), fused=True)  # what the Trainer picks (adamw_torch_fused)
    sched = get_scheduler("cosine", opt, num_warmup_steps=2, num_training_steps=args.steps + args.warmup)
    g = torch.Generator().manual_seed(0)
    model.train()
    times = []
    for _ in range(args.steps + args.warmup):
        t = time.perf_counter()
        batch = collate([data[int(i)] for i in torch.randint(len(data), (args.batch_size,), generator=g)])
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t)
    return times[args.warmup :]


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("--preset", default="160m")
    cli.add_argument("--block_size", type=int, default=128)
    cli.add_argument("--batch_size", type=int, default=4)
    cli.add_argument("--steps", type=int, default=12)
    cli.add_argument("--warmup", type=int, default=3)
    cli.add_argument("--vocab_size", type=int, default=None, help="override the preset's vocab (e.g. a small tokenizer)")
    cli.add_argument("--profile", action="store_true", help="cProfile the Trainer run and print the top entries")
    args = cli.parse_args()
    torch.manual_seed(0)
    datasets.disable_progress_bars()

    overrides = {"vocab_size": args.vocab_size} if args.vocab_size else {}
    config = build_llama_config(ModelArguments(model_preset=args.preset, **overrides), use_cache=False)
    model = LlamaForCausalLM(config)
    n_rows = (args.steps + args.warmup) * args.batch_size * 2
    ids = torch.randint(config.vocab_size, (n_rows, args.block_size), generator=torch.Generator().manual_seed(1))
    data = datasets.Dataset.from_dict({"input_ids": ids.tolist()})
    recipe = load_recipe("pretrain")

    bare = bare_steps(copy.deepcopy(model), data, args)
    with tempfile.TemporaryDirectory() as workdir:
        profiler = cProfile.Profile() if args.profile else None
        if profiler:
            profiler.enable()
        ours = trainer_steps(recipe, copy.deepcopy(model), data, args, workdir)
        if profiler:
            profiler.disable()
    bare2 = bare_steps(copy.deepcopy(model), data, args)  # bracket ours between two baselines: drift shows up
    base = statistics.median(bare + bare2)
    mine = statistics.median(ours)

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{'GPU ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU'}")
    print(f"model: {args.preset} ({count_parameters(model).total:,} params), batch {args.batch_size} x {args.block_size} "
          f"tokens, {args.steps} timed steps after {args.warmup} warm-up")
    print(f"bare PyTorch loop: median {base * 1e3:.1f} ms/step (runs: {statistics.median(bare) * 1e3:.1f}, "
          f"{statistics.median(bare2) * 1e3:.1f})")
    print(f"recipes/pretrain.py Trainer: median {mine * 1e3:.1f} ms/step")
    print(f"ratio ours/bare: {mine / base:.3f}x (goal <= 1.10x where compute dominates); "
          f"fixed overhead {1e3 * (mine - base):+.1f} ms/step")
    if profiler:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(15)
        print(out.getvalue())


if __name__ == "__main__":
    main()
