"""Step time of recipes/pretrain.py as configured vs a bare PyTorch loop: same model, batches, optimizer, schedule.

    python benchmarks/pretrain_step.py --preset 160m --block_size 128 --batch_size 4 --steps 12
    python benchmarks/pretrain_step.py --preset tiny --profile     # fixed per-step overhead, and where it goes

Ours is the recipe's own trainer (`pretrain.build_trainer`: its collator, callbacks and logging) with the preset's
YAML (configs/pretrain/<preset>.yaml), logging every step and checkpointing off. The baseline is the loop a user
would write with the same hyper-parameters from that YAML: forward, backward, clip, fused AdamW (no decay on norms),
the same LR schedule. Both start from the same weights and see the same batches (random token ids: step time does not
depend on their values); the first `--warmup` steps of each are not timed. Runs alternate bare / ours / bare / ...
`--rounds` times; reported: the median of the per-round ratios and their spread, and ours minus bare in ms/step.
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
from tokenizers import Tokenizer, models
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast, TrainerCallback, get_scheduler

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the recipes are modules of the repo root, not of the installed package
from llm_recipes.model import ModelArguments, build_llama_config, count_parameters  # noqa: E402
from recipes import pretrain  # noqa: E402


class StepTimer(TrainerCallback):
    """Time between consecutive step ends: the whole step, data loading and callbacks included."""

    def __init__(self):
        self.times, self._last = [], None

    def on_step_end(self, args, state, control, **kwargs):
        now = time.perf_counter()
        if self._last is not None:
            self.times.append(now - self._last)
        self._last = now


def recipe_args(args, workdir: str):
    """The preset's pretrain YAML, with this benchmark's batch and length, logging every step, no checkpoints."""
    argv = ["--config", str(REPO / "configs/pretrain" / f"{args.preset}.yaml"), "--output_dir", workdir,
            "--per_device_train_batch_size", str(args.batch_size), "--gradient_accumulation_steps", "1",
            "--max_steps", str(args.steps + args.warmup), "--logging_steps", "1", "--save_strategy", "no",
            "--eval_strategy", "no", "--eval_on_start", "false", "--report_to", "none", "--seed", "0"]
    if args.dataloader_num_workers is not None:
        argv += ["--dataloader_num_workers", str(args.dataloader_num_workers)]
    return pretrain.make_parser().parse(argv)[2]


def pad_only_tokenizer() -> PreTrainedTokenizerFast:
    """build_trainer takes a tokenizer (document masking reads its eos); full blocks need nothing else of it."""
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"<pad>": 0, "<unk>": 1}, "<unk>")),
                                   pad_token="<pad>", unk_token="<unk>")


def trainer_steps(model, data, args, workdir: str) -> list[float]:
    timer = StepTimer()
    trainer = pretrain.build_trainer(model, recipe_args(args, workdir), pad_only_tokenizer(), {"train": data},
                                     args.block_size)
    trainer.add_callback(timer)
    trainer.train()
    return timer.times[args.warmup - 1 :]  # the first step has no predecessor: already excluded


def collate(rows):
    ids = torch.tensor([r["input_ids"] for r in rows])
    return {"input_ids": ids, "labels": ids}


def bare_steps(model, data, args, workdir: str) -> list[float]:
    """The minimal loop a user would write, with the recipe's hyper-parameters."""
    hp = recipe_args(args, workdir)
    decay = [p for n, p in model.named_parameters() if "norm" not in n]
    no_decay = [p for n, p in model.named_parameters() if "norm" in n]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": hp.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=hp.learning_rate,
                            betas=(hp.adam_beta1, hp.adam_beta2), fused=True)  # the Trainer's adamw_torch_fused
    sched = get_scheduler(hp.lr_scheduler_type, opt, num_warmup_steps=hp.warmup_steps,
                          num_training_steps=args.steps + args.warmup, scheduler_specific_kwargs=hp.lr_scheduler_kwargs)
    g = torch.Generator().manual_seed(0)
    model.train()
    times = []
    for _ in range(args.steps + args.warmup):
        t = time.perf_counter()
        batch = collate([data[int(i)] for i in torch.randint(len(data), (args.batch_size,), generator=g)])
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), hp.max_grad_norm)
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
    cli.add_argument("--rounds", type=int, default=5, help="alternating bare / ours runs")
    cli.add_argument("--dataloader_num_workers", type=int, default=None,
                     help="override the YAML's (GPU presets load with 2 workers, which compete for a small CPU box)")
    cli.add_argument("--profile", action="store_true", help="cProfile the Trainer run and print the top entries")
    cli.add_argument("--tiny", action="store_true", help="seconds: tiny preset, vocab 512, 2 x 32 tokens, 3 steps, "
                                                         "2 rounds (the tests)")
    args = cli.parse_args()
    if args.tiny:
        args.preset, args.vocab_size, args.batch_size, args.block_size = "tiny", 512, 2, 32
        args.steps, args.warmup, args.rounds = 3, 1, 2
    torch.manual_seed(0)
    datasets.disable_progress_bars()

    overrides = {"vocab_size": args.vocab_size} if args.vocab_size else {}
    config = build_llama_config(ModelArguments(model_preset=args.preset, **overrides), use_cache=False)
    model = LlamaForCausalLM(config)
    n_rows = (args.steps + args.warmup) * args.batch_size * 2
    ids = torch.randint(config.vocab_size, (n_rows, args.block_size), generator=torch.Generator().manual_seed(1))
    data = datasets.Dataset.from_dict({"input_ids": ids.tolist()})
    profiler = cProfile.Profile() if args.profile else None
    bare, ours, ratios = [], [], []
    with tempfile.TemporaryDirectory() as workdir:
        for _ in range(args.rounds):  # alternate, so drift of the machine hits both sides alike
            bare.append(statistics.median(bare_steps(copy.deepcopy(model), data, args, workdir)))
            if profiler:
                profiler.enable()
            ours.append(statistics.median(trainer_steps(copy.deepcopy(model), data, args, workdir)))
            if profiler:
                profiler.disable()
            ratios.append(ours[-1] / bare[-1])
    ratios.sort()
    base, mine = statistics.median(bare), statistics.median(ours)
    overhead = sorted(1e3 * (o - b) for o, b in zip(ours, bare))

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{'GPU ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU'}")
    print(f"model: {args.preset} ({count_parameters(model).total:,} params), batch {args.batch_size} x {args.block_size} "
          f"tokens, {args.steps} timed steps after {args.warmup} warm-up, {args.rounds} alternating rounds")
    print(f"bare PyTorch loop:          median {base * 1e3:.1f} ms/step")
    print(f"recipes/pretrain.py (YAML): median {mine * 1e3:.1f} ms/step")
    print(f"ratio ours/bare: {statistics.median(ratios):.3f}x (spread {ratios[0]:.3f}-{ratios[-1]:.3f}; goal <= 1.10x "
          f"where compute dominates); overhead {statistics.median(overhead):+.1f} ms/step "
          f"(spread {overhead[0]:+.1f} to {overhead[-1]:+.1f})")
    if profiler:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(15)
        print(out.getvalue())


if __name__ == "__main__":
    main()
