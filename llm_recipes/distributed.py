"""The one place where we adapt distributed training to a machine without a GPU."""

from __future__ import annotations

import logging
import os
import sys

import torch


def multi_process_cpu() -> bool:
    """Launched as one of several processes (accelerate launch / torchrun set WORLD_SIZE) on a machine without GPU."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()


def use_gloo_without_gpu(training_args) -> None:
    """Pick the gloo process-group backend when no GPU is present. Call before TrainingArguments.__post_init__.

    Works around accelerate 1.15 (`accelerate/state.py`, `PartialState.__init__`): without CUDA it finds no backend
    and then treats "no backend" as "not distributed", so under `accelerate launch --num_processes 2` every rank
    believes it is rank 0 of 1 (unsharded data, DeepSpeed's train_batch_size assertion, crashes on save). GPU runs
    keep accelerate's choice (nccl). See FINDINGS §1.
    """
    if training_args.ddp_backend is None and multi_process_cpu():  # a single process needs no process group
        training_args.ddp_backend = "gloo"


def exit_skipping_teardown_on_cpu_ranks() -> None:
    """Call at the very end of a recipe's `__main__`: on 2+ CPU processes, exit without interpreter teardown.

    With gloo and DeepSpeed's CPU accelerator, about one launch in eight had a non-zero rank abort during teardown
    ("terminate called without an active exception") after every file was written and the process group closed,
    failing the whole launch. Everything is done and flushed here, so skipping the teardown loses nothing.
    """
    if multi_process_cpu():
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
