"""Fine-tune a sequence classifier (sentiment, topic, paraphrase, ...) from any checkpoint with `transformers.Trainer`.

    python recipes/classify.py --config configs/classify/tiny.yaml [--peft_type lora ...]
    accelerate launch --config_file launch/accelerate/ddp.yaml recipes/classify.py --config configs/classify/sst2_en.yaml

Labelled CSV / TSV / JSON(L) / parquet or a Hub dataset -> label names into config.json (id2label) -> train /
validation / test (from files, or split with the seed, stratified) -> EDA augmentation of train only (the code
data_prep's augment step uses) -> AutoModelForSequenceClassification (our pretrain/SFT output, or an encoder such as
BERT), full or LoRA / AdaLoRA / IA3 (`peft_type`) -> Trainer with early stopping on the chosen metric -> save (the
adapter, plus the merged model in merged/) -> eval_results.json, classify_report.md and confusion-matrix PNGs.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from peft import get_peft_model
from transformers import (AutoModelForSequenceClassification, DataCollatorWithPadding,
                          EarlyStoppingCallback, Trainer, TrainingArguments, set_seed)

from llm_recipes.adapters import AdaLoraCallback, PeftArguments, adalora_keeps_last_model, peft_config
from llm_recipes.atomic import atomic_write_text, stop_cleanly_when_disk_full
from llm_recipes.classification import (ClassifyDataArguments, load_splits, report_markdown, tokenize_splits,
                                        write_confusion_pngs)
from llm_recipes.config import ConfigError, RecipeParser
from llm_recipes.distributed import exit_skipping_teardown_on_cpu_ranks
from llm_recipes.evaluation.scoring import classification_scores, majority_baseline
from llm_recipes.run_info import write_run_info
from llm_recipes.tokenizer import tokenizer_from
from llm_recipes.training import (RecipeTrainerMixin, RecipeTrainingArguments, TokenCountCollator, resolve_resume,
                                  setup_trainer, train_and_save)

logger = logging.getLogger("classify")


@dataclass
class ModelArguments(PeftArguments):
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Checkpoint folder (make pretrain / make sft output) or Hub id (e.g. "
                                        "bert-base-uncased)."})
    tokenizer_name_or_path: str | None = field(
        default=None, metadata={"help": "Tokenizer folder or Hub id; default: the one saved with the model."})
    merge_adapter: bool = field(
        default=True, metadata={"help": "With peft: also write the adapter merged into the model to output_dir/merged."})
    early_stopping_patience: int | None = field(
        default=None, metadata={"help": "Stop after this many evaluations without improvement of "
                                        "metric_for_best_model (needs load_best_model_at_end: true)."})


@dataclass
class ClassifyConfig(RecipeTrainingArguments, TrainingArguments):
    """transformers' TrainingArguments with the fields and fix-ups of every trainer recipe (llm_recipes/training.py)."""


class ClassifyTrainer(RecipeTrainerMixin, Trainer):
    """`Trainer` with the training core's logging (tokens/s, real-token share, data order)."""


def make_parser() -> RecipeParser:
    return RecipeParser((ClassifyDataArguments, ModelArguments, ClassifyConfig))


def load_tokenizer(model_args: ModelArguments):
    name = model_args.tokenizer_name_or_path or model_args.model_name_or_path
    tokenizer = tokenizer_from(name)
    if tokenizer.pad_token is None:  # LLaMA-style tokenizers from the Hub often have none; batches need one
        logger.warning("tokenizer %s has no pad token: padding with its EOS %r", name, tokenizer.eos_token)
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def total_steps(args: ClassifyConfig, train_rows: int) -> int:
    if args.max_steps > 0:
        return args.max_steps
    per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
    return math.ceil(args.num_train_epochs * math.ceil(train_rows / per_step))


def build_model(model_args: ModelArguments, args: ClassifyConfig, tokenizer, names: list[str], steps: int):
    model = AutoModelForSequenceClassification.from_pretrained(
        model_args.model_name_or_path, num_labels=len(names), id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)})
    # A causal LM classifies from its last real token, found through pad_token_id, which its config may lack.
    model.config.pad_token_id = tokenizer.pad_token_id
    config = peft_config(model_args, "SEQ_CLS", steps)
    if config is not None:
        model = get_peft_model(model, config)
        model.print_trainable_parameters()
    return model


def compute_metrics(labels: list[int]):
    def metrics(prediction):
        scores = classification_scores(np.argmax(prediction.predictions, -1).tolist(), prediction.label_ids.tolist(),
                                       labels)
        return {k: v for k, v in scores.items() if isinstance(v, float)}  # lists (per class, matrix) go to the report
    return metrics


def main(argv: list[str] | None = None) -> Trainer:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    parser = make_parser()
    data_args, model_args, args = parser.parse(argv)
    try:
        if model_args.peft_type == "adalora" and args.load_best_model_at_end:
            adalora_keeps_last_model(args)
            model_args.early_stopping_patience = None
        if not model_args.model_name_or_path:
            raise ConfigError("model_name_or_path is required (a checkpoint folder or a Hub id)")
        if model_args.early_stopping_patience is not None and not args.load_best_model_at_end:
            raise ConfigError("early_stopping_patience needs load_best_model_at_end: true (keeps the best checkpoint)")
        resume = resolve_resume(args.resume_from_checkpoint, args.output_dir)
        tokenizer = load_tokenizer(model_args)
        with args.main_process_first(desc="labelled data"):
            splits, names, report = load_splits(data_args, seed=args.data_seed or args.seed)
            tokenized = tokenize_splits(splits, tokenizer, data_args)
        set_seed(args.seed)
        steps = total_steps(args, len(tokenized["train"]))
        model = build_model(model_args, args, tokenizer, names, steps)
    except (ConfigError, OSError) as e:
        parser.error(str(e))
    callbacks = [AdaLoraCallback()] if model_args.peft_type == "adalora" else []
    if model_args.early_stopping_patience is not None:
        callbacks.append(EarlyStoppingCallback(model_args.early_stopping_patience))
    trainer = ClassifyTrainer(
        model=model, args=args, train_dataset=tokenized["train"], eval_dataset=tokenized["validation"],
        data_collator=TokenCountCollator(DataCollatorWithPadding(tokenizer)), processing_class=tokenizer,
        compute_metrics=compute_metrics(list(range(len(names)))), callbacks=callbacks)
    setup_trainer(trainer, seq_len=data_args.max_length)
    if trainer.is_world_process_zero():
        write_run_info(args.output_dir, data_args, model_args, args, recipe="classify")
        logger.info("labels %s; %s", names, json.dumps(report["rows"]))
    train_and_save(trainer, resume, final_eval=False)  # validation and test are scored below, once each

    results, labels = {"labels": names, "data": report}, list(range(len(names)))
    for split in ("validation", "test"):
        if len(tokenized[split]):
            out = trainer.predict(tokenized[split], metric_key_prefix=split)
            predictions, references = np.argmax(out.predictions, -1).tolist(), out.label_ids.tolist()
            results[split] = {**classification_scores(predictions, references, labels),
                              "majority_baseline": majority_baseline(references, labels), "rows": len(references)}
    if trainer.is_world_process_zero():
        folder = Path(args.output_dir)
        if model_args.peft_type != "none" and model_args.merge_adapter:  # one plain checkpoint: export, pipeline()
            merged = trainer.model.merge_and_unload()
            merged.save_pretrained(folder / "merged")
            tokenizer.save_pretrained(folder / "merged")
        write_confusion_pngs(results, folder)
        atomic_write_text(folder / "eval_results.json", json.dumps(results, indent=2, ensure_ascii=False) + "\n")
        atomic_write_text(folder / "classify_report.md", report_markdown(results))
        best = results.get("test") or results["validation"]
        logger.info("accuracy %.4f, macro F1 %.4f (majority class: %.4f); report in %s", best["accuracy"],
                    best["f1_macro"], best["majority_baseline"]["accuracy"], folder / "classify_report.md")
    return trainer


if __name__ == "__main__":
    with stop_cleanly_when_disk_full("classify.py"):
        main(sys.argv[1:])
    exit_skipping_teardown_on_cpu_ranks()
