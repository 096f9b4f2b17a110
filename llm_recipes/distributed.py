"""The one place where we adapt distributed training to a machine without a GPU."""

from __future__ import annotations

import os

import torch


def use_gloo_without_gpu(training_args) -> None:
    """Pick the gloo process-group backend when no GPU is present. Call before TrainingArguments.__post_init__.

    Works around accelerate 1.15 (`accelerate/state.py`, `PartialState.__init__`): without CUDA it finds no backend
    and then treats "no backend" as "not distributed", so under `accelerate launch --num_processes 2` every rank
    believes it is rank 0 of 1 (unsharded data, DeepSpeed's train_batch_size assertion, crashes on save). GPU runs
    keep accelerate's choice (nccl). See FINDINGS §1.
    """
    launched_distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1  # a single process needs no process group
    if training_args.ddp_backend is None and launched_distributed and not torch.cuda.is_available():
        training_args.ddp_backend = "gloo"
