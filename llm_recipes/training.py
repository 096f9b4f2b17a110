"""Training glue on top of `transformers.Trainer`: throughput/MFU logging, a nanoGPT-style console line, checkpoints
that are only trusted once complete, and resume from the newest complete one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import time
import zipfile
from pathlib import Path

import torch
from safetensors import safe_open
from transformers import Trainer, TrainerCallback
from transformers.trainer_callback import ProgressCallback

from llm_recipes.atomic import atomic_write_text

logger = logging.getLogger(__name__)

CHECKPOINT_COMPLETE = "checkpoint_complete"  # written last, after every rank finished writing the checkpoint
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")

# Dense bf16 peak TFLOPS per device (vendor data sheets), for MFU; override with peak_tflops_per_device.
PEAK_BF16_TFLOPS = {"H200": 989.4, "H100 PCIe": 756.0, "H100": 989.4, "A100": 312.0, "L40S": 362.0, "L4": 121.0}


def detect_peak_tflops() -> float | None:
    if not torch.cuda.is_available():
        return None  # no honest CPU figure: MFU is reported as n/a unless the YAML states a peak
    name = torch.cuda.get_device_name()
    for key, tflops in PEAK_BF16_TFLOPS.items():  # "H100 PCIe" is listed before "H100" on purpose
        if key in name:
            return tflops
    return None


class PretrainTrainer(Trainer):
    """`Trainer` that adds tokens/s, tokens seen, MFU and perplexity to every log, and can log the data order."""

    def __init__(self, *args, tokens_per_step: int, flops_per_token: int, peak_tflops: float | None,
                 log_data_order: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.tokens_per_step = tokens_per_step
        self.flops_per_token = flops_per_token
        self.peak_tflops = peak_tflops
        self.log_data_order = log_data_order
        self._clock: tuple[float, int] | None = None

    def training_step(self, model, inputs, num_items_in_batch=None):
        if self._clock is None:
            self._clock = (time.perf_counter(), self.state.global_step)
        if self.log_data_order:
            record_batch(self, inputs["input_ids"])
        return super().training_step(model, inputs, num_items_in_batch)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._clock is not None:
            now, step = time.perf_counter(), self.state.global_step
            since, since_step = self._clock
            self._clock = (now, step)
            if step > since_step:
                tokens_per_s = (step - since_step) * self.tokens_per_step / (now - since)
                logs["tokens_per_second"] = round(tokens_per_s, 1)
                if self.peak_tflops:
                    achieved = self.flops_per_token * tokens_per_s / self.args.world_size
                    logs["mfu"] = round(achieved / (self.peak_tflops * 1e12), 4)
            logs["tokens_seen"] = step * self.tokens_per_step
        if "eval_loss" in logs:
            logs["eval_perplexity"] = round(math.exp(min(logs["eval_loss"], 50.0)), 4)
        super().log(logs, start_time)


def record_batch(trainer: Trainer, input_ids: torch.Tensor) -> None:
    """One line per micro-batch in output_dir/data_order/rank<N>.txt: the optimizer step and a hash of the token ids.
    Tests read it to check sharding (ranks differ) and resume (no batch replayed or skipped)."""
    digest = hashlib.sha1(input_ids.detach().cpu().numpy().tobytes()).hexdigest()[:16]
    path = Path(trainer.args.output_dir) / "data_order" / f"rank{trainer.args.process_index}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(f"{trainer.state.global_step} {digest}\n")


def _fmt_count(n: float) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"


class ConsoleProgressCallback(ProgressCallback):
    """The progress bar (with ETA) plus one readable line per log step, as nanoGPT prints, instead of a dict."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or self.training_bar is None or not logs:
            return
        step = f"step {state.global_step}/{state.max_steps}"
        if "loss" in logs:
            mfu = f"{logs['mfu']:.1%}" if "mfu" in logs else "n/a"
            parts = [
                step,
                f"loss {logs['loss']:.4f}",
                f"lr {logs.get('learning_rate', 0):.2e}",
                f"grad {logs.get('grad_norm', float('nan')):.3f}",
                f"{_fmt_count(logs.get('tokens_per_second', 0))} tok/s",
                f"MFU {mfu}",
                f"seen {_fmt_count(logs.get('tokens_seen', 0))} tok",
            ]
        elif "eval_loss" in logs:
            parts = [step, f"eval loss {logs['eval_loss']:.4f}", f"ppl {logs.get('eval_perplexity', float('nan')):.2f}"]
        else:
            parts = [step] + [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in logs.items()]
        self.training_bar.write(" | ".join(parts))


class CheckpointCompleteCallback(TrainerCallback):
    """Marks a checkpoint complete once every rank has written it: a folder cut off mid-write is never resumed."""

    def on_save(self, args, state, control, **kwargs):
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()  # DeepSpeed ranks write their own shards
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if folder.is_dir():  # the marker lists every file with its size: resume checks them (trainer_state.json
                # is left out: the Trainer may rewrite it later, e.g. to record the best checkpoint)
                files = {p.relative_to(folder).as_posix(): p.stat().st_size for p in sorted(folder.rglob("*"))
                         if p.is_file() and p.name not in (CHECKPOINT_COMPLETE, "trainer_state.json")}
                atomic_write_text(folder / CHECKPOINT_COMPLETE,
                                  json.dumps({"step": state.global_step, "files": files}, indent=1) + "\n")


def complete_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Checkpoints in `output_dir` whose completion marker was written, oldest first; incomplete ones are named in a
    warning and skipped. Their files are not checked here: newest_intact_checkpoint does that."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    found = sorted(
        (int(m.group(1)), p) for p in folder.iterdir() if p.is_dir() and (m := _CHECKPOINT_RE.match(p.name))
    )
    incomplete = [p.name for _, p in found if not (p / CHECKPOINT_COMPLETE).exists()]
    if incomplete:
        logger.warning("ignoring incomplete checkpoint(s) in %s: %s", folder, ", ".join(incomplete))
    return [p for _, p in found if (p / CHECKPOINT_COMPLETE).exists()]


def newest_intact_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint whose files check out; damaged newer ones are named in a warning and skipped.
    Walks newest first and stops at the first intact one, so older checkpoints are never read."""
    for path in reversed(complete_checkpoints(output_dir)):
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        logger.warning("ignoring damaged checkpoint %s: %s", path.name, problem)
    return None


def checkpoint_problem(folder: Path) -> str | None:
    """Why a checkpoint marked complete cannot be resumed from (a file missing, cut short, or unreadable), or None.

    Cheap checks first: every file the completion marker lists, at its recorded size; trainer_state.json parses;
    safetensors headers parse. Then the CRCs of torch's zip files (optimizer, scheduler, RNG states; ZeRO shards):
    this reads them once, as the resume is about to anyway.
    """
    try:
        marker = json.loads((folder / CHECKPOINT_COMPLETE).read_text())
    except json.JSONDecodeError:
        marker = {}  # a marker from before the file list: nothing to compare sizes with
    for name, size in (marker.get("files") or {}).items() if isinstance(marker, dict) else ():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, {size} when it was written"
    try:
        json.loads((folder / "trainer_state.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        return f"trainer_state.json is missing or unreadable ({type(e).__name__})"
    for path in sorted(folder.rglob("*")):
        name = path.relative_to(folder).as_posix()
        if path.suffix == ".safetensors":
            try:
                with safe_open(str(path), framework="pt"):
                    pass
            except Exception as e:  # noqa: BLE001 - any failure to read the header means: damaged
                return f"{name} is not readable safetensors ({type(e).__name__})"
        elif path.suffix in (".pt", ".pth", ".bin") and zipfile.is_zipfile(path):
            try:
                with zipfile.ZipFile(path) as archive:
                    bad = archive.testzip()
            except (zipfile.BadZipFile, OSError) as e:
                return f"{name} is damaged ({type(e).__name__})"
            if bad is not None:
                return f"{name} is damaged (CRC mismatch in {bad})"
        elif path.suffix in (".pt", ".pth", ".bin"):
            return f"{name} is damaged (not a torch zip archive)"
    return None


def resolve_resume(resume_from_checkpoint: str | None, output_dir: str) -> str | None:
    """`latest` (or `auto`) -> newest complete checkpoint in output_dir, or None to start fresh; a path is kept."""
    if resume_from_checkpoint in (None, "", "false", "False", "none", "None"):
        return None
    if resume_from_checkpoint in ("latest", "auto", "true", "True"):
        checkpoint = newest_intact_checkpoint(output_dir)
        if checkpoint is None:
            logger.info("no complete checkpoint in %s: starting from scratch", output_dir)
            return None
        return str(checkpoint)
    path = Path(resume_from_checkpoint)
    if not path.is_dir():
        raise FileNotFoundError(f"resume_from_checkpoint: no such folder {path}")
    if not (path / CHECKPOINT_COMPLETE).exists():
        raise FileNotFoundError(f"resume_from_checkpoint: {path} is incomplete (no {CHECKPOINT_COMPLETE} marker)")
    problem = checkpoint_problem(path)
    if problem:
        raise FileNotFoundError(f"resume_from_checkpoint: {path} is damaged: {problem}")
    return str(path)
