"""The training core every trainer recipe (pretrain, SFT, DPO, classify) shares, on top of `transformers.Trainer`.

Argument fix-ups (`prepare_training_args`), throughput / real-token / MFU logging (`RecipeTrainerMixin`), a
nanoGPT-style console line, checkpoints that are only trusted once complete, resume from the newest intact one,
the ZeRO-3 partition log, and the final consolidated save (`setup_trainer`, `train_and_save`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import shutil
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from transformers import IntervalStrategy, Trainer, TrainerCallback
from transformers.trainer_callback import ProgressCallback

from llm_recipes.atomic import atomic_write_text
from llm_recipes.distributed import skip_deepspeed_shm_comm, use_gloo_without_gpu
from llm_recipes.model import training_flops_per_token
from llm_recipes.redact import move_hub_token_to_env

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


@dataclass
class RecipeTrainingArguments:
    """Put before a TrainingArguments class (transformers' or TRL's) in a recipe's config bases: the fields every
    trainer recipe has, and `prepare_training_args` before the library's own `__post_init__`."""

    log_data_order: bool = field(
        default=False, metadata={"help": "Write a hash of every micro-batch per rank to output_dir/data_order/."})

    def __post_init__(self):
        prepare_training_args(self)
        super().__post_init__()


def prepare_training_args(args) -> None:
    """The fix-ups every recipe's TrainingArguments get (RecipeTrainingArguments), before the library's own checks.

    gloo on GPU-less multi-process launches and no DeepSpeed inference op on a CPU (see distributed.py); the Hub
    token moved out of the arguments, so it is never pickled into training_args.bin; bf16 / fp16 dropped without a
    GPU (TRL defaults bf16 to on); eval_on_start dropped when there is no evaluation (else the Trainer stops:
    "evaluation requires an eval_dataset"); no pinned memory without an accelerator (torch warns at every DataLoader).
    """
    use_gloo_without_gpu(args)
    skip_deepspeed_shm_comm(args)
    move_hub_token_to_env(args)
    if args.bf16 is not False and not torch.cuda.is_available():
        if args.bf16:
            logger.warning("bf16 requested but no GPU: training in fp32")
        args.bf16 = False
    if args.fp16 and not torch.cuda.is_available():
        logger.warning("fp16 requested but no GPU: training in fp32")
        args.fp16 = False
    if args.dataloader_pin_memory and not torch.accelerator.is_available():
        args.dataloader_pin_memory = False  # page-locked host memory only speeds up copies to an accelerator
    if args.eval_on_start and args.eval_strategy in ("no", IntervalStrategy.NO):
        logger.warning("eval_on_start ignored: eval_strategy is 'no'")
        args.eval_on_start = False


class RecipeTrainerMixin:
    """Put before `Trainer` (or TRL's `SFTTrainer`) in the bases: tokens/s, real tokens seen, the share of batch slots
    holding real tokens, MFU and perplexity in every log, and the data order on request.

    A collator may add `real_tokens` / `token_slots` (ints) to a batch; without them every input id counts as real,
    as in packed pretraining blocks. Counts are per process, summed over processes once per log (one all-reduce), and
    the total lives in `state.num_input_tokens_seen`, so it is saved with each checkpoint and survives a resume.
    This hooks `log` rather than a callback: callbacks see the logs after log_history and the reporting callbacks
    (TensorBoard, W&B) have taken them.
    """

    flops_per_token: int | None = None  # training FLOPs per real token, for MFU
    peak_tflops: float | None = None  # of one device; MFU is left out without it
    log_data_order: bool = False
    eval_loss_is_nll = True  # eval_perplexity = exp(eval_loss); DPO's loss is not a token NLL

    def training_step(self, model, inputs, num_items_in_batch=None):
        real, slots = inputs.pop("real_tokens", None), inputs.pop("token_slots", None)
        if not hasattr(self, "_counts"):
            self._counts = {"real": 0, "slots": 0, "start": None, "share": slots is not None}
        c = self._counts
        c["start"] = c["start"] or time.perf_counter()
        c["real"] += int(real) if real is not None else inputs["input_ids"].numel()  # shapes only: no device sync
        c["slots"] += int(slots) if slots is not None else inputs["input_ids"].numel()
        if self.log_data_order:
            record_batch(self, inputs["input_ids"])
        return super().training_step(model, inputs, num_items_in_batch)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs.pop("real_tokens", None), inputs.pop("token_slots", None)
        if self.log_data_order:
            record_batch(self, inputs["input_ids"], prefix="eval-")
        return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)

    def _count_window(self) -> tuple[int, int, float] | None:
        """(real tokens, slots, seconds) of every process since the last log, added to the saved total."""
        c = getattr(self, "_counts", None)
        if not c or c["start"] is None:
            return None
        counts = torch.tensor([c["real"], c["slots"]], dtype=torch.int64, device=self.args.device)
        real, slots = (self.accelerator.reduce(counts, "sum") if self.args.world_size > 1 else counts).tolist()
        seconds = time.perf_counter() - c["start"]
        if self.args.include_num_input_tokens_seen in ("no", False):  # else the Trainer keeps this count itself
            self.state.num_input_tokens_seen += real
        c.update(real=0, slots=0, start=None)
        return real, slots, seconds

    def _save_checkpoint(self, model, trial):
        if self._count_window():  # the saved total includes the window so far; the next log reports the rest
            self._counts["start"] = time.perf_counter()
        return super()._save_checkpoint(model, trial)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and (window := self._count_window()):  # a training log: every process is here
            real, slots, seconds = window
            tokens_per_s = real / max(seconds, 1e-9)
            logs["tokens_per_second"] = round(tokens_per_s, 1)
            logs["tokens_seen"] = self.state.num_input_tokens_seen
            if self._counts["share"]:
                logs["real_token_share"] = round(real / max(slots, 1), 4)
            if self.peak_tflops and self.flops_per_token:
                achieved = self.flops_per_token * tokens_per_s / self.args.world_size
                logs["mfu"] = round(achieved / (self.peak_tflops * 1e12), 4)
        if "eval_loss" in logs and self.eval_loss_is_nll:
            logs["eval_perplexity"] = round(math.exp(min(logs["eval_loss"], 50.0)), 4)
        super().log(logs, start_time)


class TokenCountCollator:
    """Wraps a collator and adds, per batch (per process), the real tokens and the slots they fill, which
    RecipeTrainerMixin logs as real_token_share, tokens/s and tokens seen. Plain ints: counting never waits on a GPU.

    Padded batches: rows are padded to the longest one, so share = tokens / (rows * longest). Packed (`width` set):
    a row is a bin of `width` slots, so share = tokens / (rows * width). Preference pairs (no `input_ids` per
    example): the collated attention mask, where a pair is two rows, prompt + chosen and prompt + rejected.
    """

    def __init__(self, collator, width: int | None = None):
        self.collator, self.width = collator, width

    def __call__(self, examples):
        if "input_ids" not in examples[0]:
            batch = self.collator(examples)
            mask = batch["attention_mask"]  # still on the CPU here
            batch["real_tokens"], batch["token_slots"] = int(mask.sum()), mask.numel()
            return batch
        lengths = [len(ex["input_ids"]) for ex in examples]
        batch = self.collator(examples)
        batch["real_tokens"] = sum(lengths)
        batch["token_slots"] = len(lengths) * (self.width or max(lengths))
        return batch


def record_batch(trainer: Trainer, input_ids: torch.Tensor, prefix: str = "") -> None:
    """One line per micro-batch in output_dir/data_order/rank<N>.txt (evaluation batches: eval-rank<N>.txt): the
    optimizer step and a hash of the token ids. Tests read it to check sharding (ranks differ) and resume (no batch
    replayed or skipped), and to kill a run in the middle of an evaluation."""
    digest = hashlib.sha1(input_ids.detach().cpu().numpy().tobytes()).hexdigest()[:16]
    path = Path(trainer.args.output_dir) / "data_order" / f"{prefix}rank{trainer.args.process_index}.txt"
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
            if "rewards/accuracies" in logs:  # DPO
                parts.insert(2, f"reward acc {logs['rewards/accuracies']:.2f}")
        elif "eval_loss" in logs:
            parts = [step, f"eval loss {logs['eval_loss']:.4f}"]
            if "eval_perplexity" in logs:
                parts.append(f"ppl {logs['eval_perplexity']:.2f}")
            if "eval_rewards/accuracies" in logs:
                parts += [f"reward acc {logs['eval_rewards/accuracies']:.3f}",
                          f"margin {logs['eval_rewards/margins']:.4f}"]
        else:
            parts = [step] + [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in logs.items()]
        self.training_bar.write(" | ".join(parts))


def setup_trainer(trainer: Trainer, *, seq_len: int | None, peak_tflops: float | None = None) -> Trainer:
    """Our callbacks and logging on a built trainer: completion markers, the console line instead of the dict, MFU
    (FLOPs per token at `seq_len`, default the model's longest, against the device's peak), the data order when the
    arguments ask for it, and the ZeRO-3 partition of this rank."""
    trainer.add_callback(CheckpointCompleteCallback())
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(ConsoleProgressCallback)
    trainer.log_data_order = getattr(trainer.args, "log_data_order", False)
    trainer.peak_tflops = peak_tflops or detect_peak_tflops()
    total, trainable = parameter_counts(trainer.model)
    config = trainer.model.config
    trainer.flops_per_token = training_flops_per_token(config, total, seq_len or config.max_position_embeddings,
                                                       trainable=trainable)
    log_partition(trainer.model, trainer.args)
    return trainer


def log_partition(model, args, what: str = "") -> None:
    """Under ZeRO-3, say how much of the model this rank holds (each rank should hold about 1/world_size)."""
    params = [p for p in model.parameters() if hasattr(p, "ds_tensor")]
    if params:
        held, total = sum(p.ds_tensor.numel() for p in params), sum(p.ds_numel for p in params)
        print(f"[rank {args.process_index}] {what}ZeRO-3 partition: holds {held:,} of {total:,} parameter elements "
              f"({held / total:.1%})", flush=True)


def parameter_counts(model) -> tuple[int, int]:
    """(all, trainable) parameter elements; under ZeRO-3 a rank holds a shard, `ds_numel` is the full size."""
    unique = {id(p): p for p in model.parameters()}.values()
    sizes = [(getattr(p, "ds_numel", p.numel()), p.requires_grad) for p in unique]
    return sum(n for n, _ in sizes), sum(n for n, trainable in sizes if trainable)


def train_and_save(trainer: Trainer, resume: str | None, final_eval: bool = True) -> None:
    """Train (resuming from `resume`), evaluate the final (or best) model unless the last log already did (or the
    recipe scores it itself: `final_eval=False`), save."""
    trainer.train(resume_from_checkpoint=resume)
    evaluated = [e["step"] for e in trainer.state.log_history if "eval_loss" in e]
    fresh = evaluated and evaluated[-1] == trainer.state.global_step and not trainer.args.load_best_model_at_end
    if final_eval and trainer.eval_dataset is not None and not fresh:
        trainer.save_metrics("eval", trainer.evaluate())  # eval_results.json
    if trainer.state.best_model_checkpoint and trainer.is_world_process_zero():
        logger.info("best checkpoint: %s (%s %.4f)", trainer.state.best_model_checkpoint,
                    trainer.args.metric_for_best_model, trainer.state.best_metric)
    save_final(trainer, trainer.args.output_dir)


def save_final(trainer: Trainer, output_dir: str) -> None:
    """Model (consolidated under ZeRO-3: every rank takes part in the gather) or peft adapter + tokenizer, written to
    a staging folder and moved in file by file, then trainer_state.json with the whole log history."""
    staging = Path(output_dir) / ".final-staging"
    base = trainer.model.get_base_model() if hasattr(trainer.model, "get_base_model") else trainer.model
    # Trained without a KV cache (packed rows need it off); inference is where the cache makes generate fast.
    generation_config = getattr(base, "generation_config", None)  # classifiers have none
    base.config.use_cache = True
    if generation_config is not None:
        generation_config.use_cache = True
    trainer.save_model(str(staging))
    trainer.accelerator.wait_for_everyone()
    if trainer.is_world_process_zero():
        if base is not trainer.model and generation_config is not None:  # adapter: ship its stop tokens with it
            generation_config.save_pretrained(staging)
        for item in staging.iterdir():
            target = Path(output_dir) / item.name
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(item, target)
        shutil.rmtree(staging, ignore_errors=True)
    trainer.save_state()


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
