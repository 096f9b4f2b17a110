"""Instruction-tune a causal LM with TRL's SFTTrainer: chat template, assistant-only loss, packing, LoRA/QLoRA, ZeRO-3.

    python recipes/sft.py --config configs/sft/tiny.yaml [--learning_rate 1e-4 ...]
    accelerate launch --config_file launch/accelerate/zero3.yaml --num_processes 8 recipes/sft.py --config ...

The shape of TRL's `trl sft` and alignment-handbook's sft.py: ScriptArguments (the data mixture), SFTConfig (TRL's,
training), ModelConfig (TRL's: model, dtype, LoRA, 4-bit) from YAML + CLI -> instruction mixture converted to
`messages` (llm_recipes/chat_data.py) -> SFTTrainer(model_name_or_path, peft_config=get_peft_config(model_args)) ->
train with eval loss (and optional early stopping, best checkpoint kept) -> save (full model, or the peft adapter) ->
optional push. Logs the share of real tokens per batch and tokens/s; writes resolved_config.yaml, run_info.json,
data_report.json and, with `sample_prompt`, one generation through the chat template (sample_generation.json).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

# bitsandbytes 0.50 on CPU warns at import that its optional Hub kernel (`kernels`) is missing; nothing is fetched at
# run time here, and its built-in 4-bit fallback is what QLoRA uses and the tests check.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

import trl  # noqa: E402
from transformers import EarlyStoppingCallback, set_seed
from trl import ModelConfig, SFTTrainer, get_quantization_config

from llm_recipes.adapters import check_quantized_training, trl_peft_config
from llm_recipes.atomic import atomic_write_text, stop_cleanly_when_disk_full
from llm_recipes.chat_data import ChatDataArguments, drop_too_long, load_mixture, report_dict
from llm_recipes.config import ConfigError, RecipeParser
from llm_recipes.distributed import exit_skipping_teardown_on_cpu_ranks
from llm_recipes.run_info import write_run_info
from llm_recipes.sample import write_sample
from llm_recipes.tokenizer import load_chat_tokenizer, masking_template, set_stop_tokens, tokenizing_quietly
from llm_recipes.training import (RecipeTrainerMixin, RecipeTrainingArguments, TokenCountCollator, resolve_resume,
                                  setup_trainer, train_and_save)

logger = logging.getLogger("sft")
warnings.filterwarnings("ignore", message=r".*(all_gather_into_tensor|reduce_scatter_tensor).*", category=FutureWarning)


@dataclass
class ScriptArguments(ChatDataArguments):
    tokenizer_name_or_path: str | None = field(
        default=None, metadata={"help": "Tokenizer folder or Hub id; default: the one saved with model_name_or_path."}
    )
    early_stopping_patience: int | None = field(
        default=None,
        metadata={"help": "Stop after this many evaluations without eval_loss improvement (needs eval_strategy and "
                          "load_best_model_at_end: true, which keeps the best checkpoint); unset = no early stopping."},
    )
    early_stopping_threshold: float = field(
        default=0.0, metadata={"help": "Smallest eval_loss decrease that counts as an improvement for early stopping."}
    )
    sample_prompt: str | None = field(
        default=None,
        metadata={"help": "After training, answer this user prompt through the chat template (greedy) and write it to "
                          "sample_generation.json; single-process runs only."},
    )
    sample_max_new_tokens: int = field(default=64, metadata={"help": "Token budget of the sample generation."})
    long_conversations: str = field(
        default="truncate",
        metadata={"help": "Conversations over max_length tokens: truncate (TRL: the end, with the answer's end-of-turn, "
                          "is cut) or drop (counted per source in data_report.json).", "choices": ["truncate", "drop"]})
    peft_type: str = field(
        default="lora",
        metadata={"help": "With use_peft: lora (TRL's LoRA: DoRA, rsLoRA and QLoRA flags apply), adalora or ia3 "
                          "(rank, alpha, dropout, targets and modules_to_save from the lora_* keys).",
                  "choices": ["lora", "adalora", "ia3"]})


@dataclass
class SFTConfig(RecipeTrainingArguments, trl.SFTConfig):
    """TRL's SFTConfig with the fields and fix-ups of every trainer recipe (llm_recipes/training.py)."""


def make_parser() -> RecipeParser:
    return RecipeParser((ScriptArguments, SFTConfig, ModelConfig))


# --- checks before any compute ----------------------------------------------------------------------------------------


def check_combination(script_args: ScriptArguments, args: SFTConfig, model_args: ModelConfig) -> None:
    if not model_args.model_name_or_path:
        raise ConfigError("model_name_or_path is required (a model folder, e.g. outputs/tiny/pretrain, or a Hub id)")
    if script_args.early_stopping_patience is not None:
        if args.eval_strategy == "no" or not script_args.test_split_size:
            raise ConfigError("early_stopping_patience needs an eval split (test_split_size > 0) and eval_strategy")
        if not args.load_best_model_at_end:
            raise ConfigError("early_stopping_patience needs load_best_model_at_end: true (keeps the best checkpoint)")
    if args.eval_strategy != "no" and not script_args.test_split_size:
        raise ConfigError(f"eval_strategy is {args.eval_strategy!r} but test_split_size is 0: no eval split")


def load_tokenizer(script_args: ScriptArguments, model_args: ModelConfig, args: SFTConfig):
    """The model's tokenizer, and the template to mask assistant turns with (None: its own, or TRL's variant)."""
    name = script_args.tokenizer_name_or_path or model_args.model_name_or_path
    tokenizer = load_chat_tokenizer(name, model_args.model_revision, args.trust_remote_code, args.chat_template_path)
    masking = None
    if args.assistant_only_loss and args.chat_template_path is None:
        masking = masking_template(tokenizer, name)
    return tokenizer, masking


# --- the trainer: SFTTrainer + the training core's logging -----------------------------------------------------------


class RecipeSFTTrainer(RecipeTrainerMixin, SFTTrainer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # packed (bfd): a row is a bin of max_length slots; padded: rows are as long as the longest
        self.data_collator = TokenCountCollator(self.data_collator, self.args.max_length if self.args.packing else None)


def build_trainer(script_args: ScriptArguments, args: SFTConfig, model_args: ModelConfig):
    """Checks, tokenizer, instruction data and the SFTTrainer; raises ConfigError for a config mistake."""
    check_combination(script_args, args, model_args)
    check_quantized_training(model_args, args)
    tokenizer, masking = load_tokenizer(script_args, model_args, args)
    with args.main_process_first(desc="instruction data"):
        data, reports = load_mixture(script_args, seed=args.data_seed if args.data_seed is not None else args.seed)
    if script_args.long_conversations == "drop" and args.max_length:
        data = drop_too_long(data, tokenizer, args.max_length, reports)
    report = report_dict(reports)
    logger.info("instruction data: %d train / %d test conversations from %d records; %d invalid, %d too long dropped",
                report["train"], report["test"], report["records"], report["invalid_dropped"],
                report["too_long_dropped"])

    set_seed(args.seed)
    # use_cache False: packed rows get their block-diagonal mask only without a KV cache (FINDINGS §1b)
    args.model_init_kwargs = {"revision": model_args.model_revision, "dtype": model_args.dtype,
                              "attn_implementation": model_args.attn_implementation, "use_cache": False,
                              **(args.model_init_kwargs or {})}
    peft, callbacks = trl_peft_config(model_args, script_args.peft_type, args)
    if script_args.early_stopping_patience is not None and not args.load_best_model_at_end:
        script_args.early_stopping_patience = None  # AdaLoRA turned it off: it cannot reload a pruned checkpoint
    if script_args.early_stopping_patience is not None:
        callbacks.append(
            EarlyStoppingCallback(script_args.early_stopping_patience, script_args.early_stopping_threshold))
    try:
        with tokenizing_quietly(tokenizer, masking):  # data tokenized in __init__; the own template is saved
            trainer = RecipeSFTTrainer(
                model=model_args.model_name_or_path,
                args=args,
                train_dataset=data["train"],
                eval_dataset=data["test"] if args.eval_strategy != "no" else None,
                processing_class=tokenizer,
                callbacks=callbacks,
                quantization_config=get_quantization_config(model_args),
                peft_config=peft,
            )
    except (ImportError, ValueError) as e:  # e.g. a tokenizer the model does not fit, a quantizer refusing the machine
        raise ConfigError(f"{type(e).__name__}: {str(e).splitlines()[0]}") from None
    setup_trainer(trainer, seq_len=args.max_length)
    base = trainer.model.get_base_model() if hasattr(trainer.model, "get_base_model") else trainer.model
    set_stop_tokens(base.generation_config, tokenizer)
    return trainer, report


def main(argv: list[str] | None = None) -> SFTTrainer:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    parser = make_parser()
    script_args, args, model_args = parser.parse(argv)
    try:
        resume = resolve_resume(args.resume_from_checkpoint, args.output_dir)
        trainer, report = build_trainer(script_args, args, model_args)
    except (ConfigError, OSError) as e:
        parser.error(str(e))
    tokenizer = trainer.processing_class
    if trainer.is_world_process_zero():
        write_run_info(args.output_dir, script_args, args, model_args, recipe="sft")
        atomic_write_text(Path(args.output_dir) / "data_report.json",
                          json.dumps(report, indent=2, ensure_ascii=False) + "\n")

    train_and_save(trainer, resume)  # with the final (or best) model's eval loss in eval_results.json
    if trainer.is_world_process_zero():
        logger.info("%s saved to %s", "adapter" if model_args.use_peft else "model", args.output_dir)
    if script_args.sample_prompt and args.world_size == 1:
        write_sample(trainer.model, tokenizer, script_args.sample_prompt, script_args.sample_max_new_tokens,
                     args.output_dir)
    if args.push_to_hub:  # output_dir (model or adapter, tokenizer, card) to hub_model_id; checkpoints stay local
        hub_sources = [s.path for s in script_args.datasets if not os.path.exists(os.path.expandvars(s.path))]
        trainer.push_to_hub(dataset_name=", ".join(hub_sources) or None)
    trainer.accelerator.wait_for_everyone()  # every rank done before any tears its process group down
    trainer.end()  # close the trackers and the process group before exit, as `trl sft` does
    return trainer


if __name__ == "__main__":
    with stop_cleanly_when_disk_full("sft.py"):
        main(sys.argv[1:])
    exit_skipping_teardown_on_cpu_ranks()
