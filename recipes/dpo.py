"""Preference-tune a chat model with TRL's DPOTrainer: DPO (and the other TRL losses), LoRA or full, ZeRO-3.

    python recipes/dpo.py --config configs/dpo/tiny.yaml [--beta 0.05 --loss_type ipo ...]
    accelerate launch --config_file launch/accelerate/zero3.yaml --num_processes 8 recipes/dpo.py --config ...

The shape of TRL's `trl dpo` and alignment-handbook's dpo.py: ScriptArguments (the preference mixture), DPOConfig
(TRL's), ModelConfig (TRL's: model, dtype, LoRA) from YAML + CLI -> preference pairs converted to conversational
prompt / chosen / rejected (llm_recipes/chat_data.py), prompts fitted to max_prompt_length (counted) -> DPOTrainer
(the reference is a frozen copy of the start model, or with LoRA the same weights with the adapter disabled) -> train
-> save (full model or adapter) -> the held-out pairs scored under the policy and the reference (dpo_report.md,
dpo_metrics.json). Start from an SFT output (full, or merged with make merge-lora).
"""

from __future__ import annotations

import json
import logging
import sys
import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import trl
from transformers import set_seed
from trl import DPOTrainer, ModelConfig, get_peft_config, get_quantization_config

from llm_recipes.adapters import check_quantized_training
from llm_recipes.atomic import atomic_write_text, stop_cleanly_when_disk_full
from llm_recipes.chat_data import PREFERENCE, ChatDataArguments, load_mixture
from llm_recipes.config import ConfigError, RecipeParser
from llm_recipes.distributed import exit_skipping_teardown_on_cpu_ranks
from llm_recipes.preference import (apply_length_policy, data_report, fit_prompts, held_out_scores,
                                    pair_log_probs, report_markdown)
from llm_recipes.run_info import write_run_info
from llm_recipes.tokenizer import load_chat_tokenizer, set_stop_tokens, tokenizing_quietly
from llm_recipes.training import (RecipeTrainerMixin, RecipeTrainingArguments, TokenCountCollator, log_partition,
                                  resolve_resume, setup_trainer, train_and_save)

logger = logging.getLogger("dpo")
warnings.filterwarnings("ignore", message=r".*(all_gather_into_tensor|reduce_scatter_tensor).*", category=FutureWarning)

# The losses TRL 1.16's DPOTrainer implements (checked here, before any compute, instead of at the first step).
LOSS_TYPES = ("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
              "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm")


@dataclass
class ScriptArguments(ChatDataArguments):
    tokenizer_name_or_path: str | None = field(
        default=None, metadata={"help": "Tokenizer folder or Hub id; default: the one saved with model_name_or_path."}
    )
    max_prompt_length: int = field(
        default=512,
        metadata={"help": "Token budget of a prompt (chat template applied): longer multi-turn prompts lose their "
                          "oldest exchanges, and a pair whose last user turn alone is longer is dropped; both are "
                          "counted per source. Must be below max_length, which leaves the rest to the answers."})
    long_pairs: str = field(
        default="truncate",
        metadata={"help": "Pairs whose prompt + longer answer exceed max_length: truncate (TRL: the answers lose their "
                          "end, end-of-turn included) or drop (counted per source as answer too long).",
                  "choices": ["truncate", "drop"]})


@dataclass
class DPOConfig(RecipeTrainingArguments, trl.DPOConfig):
    """TRL's DPOConfig with the fields and fix-ups of every trainer recipe (llm_recipes/training.py)."""


def make_parser() -> RecipeParser:
    return RecipeParser((ScriptArguments, DPOConfig, ModelConfig))


def check_combination(script_args: ScriptArguments, args: DPOConfig, model_args: ModelConfig) -> None:
    if not model_args.model_name_or_path:
        raise ConfigError("model_name_or_path is required (an SFT output, e.g. outputs/tiny/sft, or a Hub id)")
    if (Path(model_args.model_name_or_path) / "adapter_config.json").is_file():
        raise ConfigError(f"{model_args.model_name_or_path} is a LoRA adapter: merge it first (make merge-lora "
                          f"ADAPTER={model_args.model_name_or_path}) and start from the merged folder")
    unknown = [t for t in args.loss_type if t not in LOSS_TYPES]
    if unknown:
        raise ConfigError(f"loss_type {', '.join(unknown)} unknown; TRL offers {', '.join(LOSS_TYPES)}")
    if args.max_length is not None and script_args.max_prompt_length >= args.max_length:
        raise ConfigError(f"max_prompt_length ({script_args.max_prompt_length}) must be below max_length "
                          f"({args.max_length}): the answers need the rest")
    if args.eval_strategy != "no" and not script_args.test_split_size:
        raise ConfigError(f"eval_strategy is {args.eval_strategy!r} but test_split_size is 0: no held-out pairs")


def warn_if_not_instruction_tuned(path: str) -> None:
    """DPO starts from an SFT model: its reference must already answer in the chat format. A local folder written by
    pretrain (or consolidated from it) has never seen a conversation, so say so."""
    info = Path(path) / "run_info.json"
    recipe = json.loads(info.read_text()).get("recipe") if info.is_file() else None
    if recipe in ("pretrain", "consolidate"):
        logger.warning("%s is a base model (written by %s), not an SFT model: DPO on it rarely helps; run make sft "
                       "first and start from its output", path, recipe)


class RecipeDPOTrainer(RecipeTrainerMixin, DPOTrainer):
    eval_loss_is_nll = False  # the DPO loss: no perplexity

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)  # the reference log-probs, when precomputed, use the bare collator
        self.data_collator = TokenCountCollator(self.data_collator)


def build_trainer(script_args: ScriptArguments, args: DPOConfig, model_args: ModelConfig):
    """Checks, tokenizer, preference pairs and the DPOTrainer; raises ConfigError for a config or data mistake."""
    check_combination(script_args, args, model_args)
    check_quantized_training(model_args, args)
    warn_if_not_instruction_tuned(model_args.model_name_or_path)
    tokenizer = load_chat_tokenizer(script_args.tokenizer_name_or_path or model_args.model_name_or_path,
                                    model_args.model_revision, args.trust_remote_code, hint="start from an SFT model")
    counts: dict[str, Counter] = defaultdict(Counter)
    with args.main_process_first(desc="preference pairs"):
        data, reports = load_mixture(script_args, args.data_seed if args.data_seed is not None else args.seed,
                                     PREFERENCE)
        for split in data:
            data[split], fitted = fit_prompts(data[split], tokenizer, script_args.max_prompt_length, split)
            for source, c in fitted.items():
                counts[source].update(c)
    if len(data["train"]) == 0:
        raise ConfigError(f"no training pair has a prompt within max_prompt_length {script_args.max_prompt_length}")

    set_seed(args.seed)
    args.model_init_kwargs = {"revision": model_args.model_revision, "dtype": model_args.dtype,
                              "attn_implementation": model_args.attn_implementation, "use_cache": False,
                              **(args.model_init_kwargs or {})}
    try:
        with tokenizing_quietly(tokenizer):  # the pairs are tokenized in __init__ (TRL cuts them at max_length)
            trainer = RecipeDPOTrainer(
                model=model_args.model_name_or_path,
                args=args,
                train_dataset=data["train"],
                eval_dataset=data.get("test"),  # also scored after training, whatever eval_strategy says
                processing_class=tokenizer,
                quantization_config=get_quantization_config(model_args),
                peft_config=get_peft_config(model_args),
            )
    except (ImportError, ValueError) as e:  # e.g. a loss that needs label_smoothing, a tokenizer without pad token
        raise ConfigError(f"{type(e).__name__}: {str(e).splitlines()[0]}") from None
    apply_length_policy(trainer, args.max_length, script_args.long_pairs == "drop", counts)  # after tokenizing
    if len(trainer.train_dataset) == 0:
        raise ConfigError(f"every training pair is longer than max_length {args.max_length}")
    setup_trainer(trainer, seq_len=args.max_length)
    if trainer.ref_model is not None:  # the frozen copy: partitioned like the policy under ZeRO-3
        log_partition(trainer.ref_model, args, "reference ")
    base = trainer.model.get_base_model() if hasattr(trainer.model, "get_base_model") else trainer.model
    set_stop_tokens(base.generation_config, tokenizer)
    return trainer, data_report(reports, counts, script_args.max_prompt_length)


def main(argv: list[str] | None = None) -> DPOTrainer:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    parser = make_parser()
    script_args, args, model_args = parser.parse(argv)
    try:
        resume = resolve_resume(args.resume_from_checkpoint, args.output_dir)
        trainer, report = build_trainer(script_args, args, model_args)
    except (ConfigError, OSError) as e:
        parser.error(str(e))
    out = Path(args.output_dir)
    if trainer.is_world_process_zero():
        write_run_info(args.output_dir, script_args, args, model_args, recipe="dpo")
        atomic_write_text(out / "data_report.json", json.dumps(report, indent=2, ensure_ascii=False) + "\n")
        logger.info("preference pairs: %d train / %d held out from %d records; %d invalid, %d prompts too long",
                    report["train"], report["test"], report["records"], report["invalid"], report["prompt_too_long"])

    train_and_save(trainer, resume, final_eval=False)  # the held-out pairs are scored below, once each
    scores = None
    if trainer.eval_dataset is not None:
        scores = held_out_scores(pair_log_probs(trainer, trainer.eval_dataset), args.beta)
        trainer.log({f"eval_final_{k}": v for k, v in scores.items() if not k.endswith("ci95")})  # TensorBoard too
        trainer.save_state()
    if trainer.is_world_process_zero():
        atomic_write_text(out / "dpo_metrics.json", json.dumps({"held_out": scores, "data": report}, indent=2,
                                                               ensure_ascii=False) + "\n")
        atomic_write_text(out / "dpo_report.md", report_markdown(scores, report, args, trainer.state.log_history))
        logger.info("%s and dpo_report.md saved to %s", "adapter" if model_args.use_peft else "model", out)
    if args.push_to_hub:
        trainer.push_to_hub()
    trainer.accelerator.wait_for_everyone()  # every rank done before any tears its process group down
    trainer.end()
    return trainer


if __name__ == "__main__":
    with stop_cleanly_when_disk_full("dpo.py"):
        main(sys.argv[1:])
    exit_skipping_teardown_on_cpu_ranks()
