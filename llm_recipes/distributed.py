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


def skip_deepspeed_shm_comm(training_args) -> None:
    """Keep DeepSpeed from building its shared-memory all-reduce when it sets up the process group on a CPU machine
    (one process or several). Call before TrainingArguments.__post_init__.

    Only its inference engine's tensor parallelism calls that op (`inference_all_reduce`); training reduces through
    gloo either way. Building it is a C++ compile of ~30 s of 2 cores on the first launch of each install (cached
    per venv path), and every later launch loads it and prints "... shm_comm_op built successfully". Marked
    incompatible, DeepSpeed neither builds nor loads it (deepspeed/comm/torch.py, build_shm_op).
    """
    uses_deepspeed = training_args.deepspeed or os.environ.get("ACCELERATE_USE_DEEPSPEED") == "true"
    if torch.cuda.is_available() or not uses_deepspeed:
        return
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


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
