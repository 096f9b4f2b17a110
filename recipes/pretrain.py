"""Pretrain a LLaMA-style model from scratch, or continue pretraining an existing one, on packed blocks.

    accelerate launch --config_file launch/accelerate/zero3.yaml recipes/pretrain.py \
        --config configs/pretrain/tiny.yaml [--learning_rate 1e-3 ...]
    python recipes/pretrain.py --config configs/pretrain/tiny.yaml --dry_run   # plan: params, FLOPs, memory, steps

Model preset (configs/model/) + tokenizer -> random-init LlamaForCausalLM (inside DeepSpeed's zero.Init under ZeRO-3,
so a 7B model never exists whole on one rank) -> memory-mapped packed blocks (recipes/pack.py: Arrow or uint16 /
uint32 shards) -> transformers.Trainer -> consolidated safetensors in output_dir. With `model_name_or_path` the model
is loaded instead (sharded under ZeRO-3), optionally with only its embeddings trained or as LoRA + embeddings
(llm_recipes/continued.py).
Checkpoints every save_steps; `--resume_from_checkpoint latest` continues from the newest complete one with the same
data order.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from transformers import AutoModelForCausalLM, Trainer, TrainingArguments, set_seed

from llm_recipes.atomic import atomic_write_text, stop_cleanly_when_disk_full
from llm_recipes.config import ConfigError, RecipeParser
from llm_recipes.continued import ContinueArguments, check_continue, load_config, load_pretrained
from llm_recipes.distributed import exit_skipping_teardown_on_cpu_ranks
from llm_recipes.model import ModelArguments, attention_implementation, build_llama_config
from llm_recipes.model_info import format_plan, plan
from llm_recipes.packing import BlockCollator, DocumentMaskingCollator, tokenizer_fingerprint
from llm_recipes.run_info import write_run_info
from llm_recipes.shards import load_packed, max_token_id
from llm_recipes.tokenizer import tokenizer_from
from llm_recipes.training import (RecipeTrainerMixin, RecipeTrainingArguments, resolve_resume, setup_trainer,
                                  train_and_save)

logger = logging.getLogger("pretrain")
# DeepSpeed calls torch.distributed's old collective names once per step; the deprecation notice drowns the log.
warnings.filterwarnings("ignore", message=r".*(all_gather_into_tensor|reduce_scatter_tensor).*", category=FutureWarning)


@dataclass
class DataArguments:
    dataset_path: str = field(metadata={"help": "Packed dataset folder written by recipes/pack.py (make pack)."})
    tokenizer_name_or_path: str | None = field(
        default=None, metadata={"help": "Tokenizer folder; default: the one the packed dataset was made with."}
    )
    attn_implementation: str = field(
        default="auto", metadata={"help": "auto (flash_attention_2 when installed on a GPU, else sdpa), sdpa, eager."}
    )
    document_masking: bool = field(
        default=False,
        metadata={"help": "Keep the documents of a packed block apart in attention: position_ids restart after every "
                          "EOS (block-diagonal causal mask; sdpa / eager / flash-attention varlen, no KV cache)."})


@dataclass
class PretrainConfig(RecipeTrainingArguments, TrainingArguments):
    max_tokens: int | None = field(
        default=None, metadata={"help": "Token budget; sets max_steps = ceil(max_tokens / tokens per step)."}
    )
    peak_tflops_per_device: float | None = field(
        default=None, metadata={"help": "Peak TFLOPS of one device for MFU; auto-detected on known GPUs, n/a on CPU."}
    )
    dry_run: bool = field(
        default=False,
        metadata={"help": "Print params, FLOPs/token, ZeRO-3 memory and the step/token plan, then exit (works before "
                          "the data is packed: then the block size is max_position_embeddings)."},
    )
    dry_run_world_size: int | None = field(
        default=None, metadata={"help": "Processes (GPUs) to plan for in --dry_run; default: the launched world size."}
    )


class PretrainTrainer(RecipeTrainerMixin, Trainer):
    """`Trainer` with our logging: tokens/s, tokens seen, MFU, perplexity (llm_recipes/training.py)."""


def make_parser() -> RecipeParser:
    return RecipeParser((ModelArguments, DataArguments, PretrainConfig, ContinueArguments))


def check_compatible(packed, stats: dict, tokenizer, config) -> None:
    """Refuse data the model cannot train on, before any compute."""
    packed_with = stats["tokenizer"]
    if packed_with["sha256"] != tokenizer_fingerprint(tokenizer):
        raise ConfigError(
            f"vocab mismatch: the data was packed with tokenizer {packed_with['name_or_path']} "
            f"({packed_with['vocab_size']} tokens), not with the given tokenizer ({len(tokenizer)} tokens)"
        )
    block_size = stats["splits"]["train"]["block_size"]
    if block_size > config.max_position_embeddings:
        raise ConfigError(
            f"block_size {block_size} of the packed data exceeds the model's max_position_embeddings "
            f"{config.max_position_embeddings}: repack with a smaller block_size or raise max_position_embeddings"
        )
    max_id = max(max_token_id(split) for split in packed.values())
    if max_id >= config.vocab_size:
        raise ConfigError(f"the packed data holds token id {max_id}, beyond the model's vocab_size {config.vocab_size}")


def schedule(args: PretrainConfig, config, world_size: int, block_size: int, train_tokens: int | None) -> dict:
    """The run's plan (llm_recipes/model_info.py): steps from max_tokens, max_steps or epochs of the packed data."""
    tokens_per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * world_size * block_size
    if args.max_tokens:
        max_steps = math.ceil(args.max_tokens / tokens_per_step)
    elif args.max_steps > 0:
        max_steps = args.max_steps
    elif train_tokens:
        max_steps = math.ceil(args.num_train_epochs * train_tokens / tokens_per_step)
    else:
        raise ConfigError("set max_tokens or max_steps (the number of epochs needs the packed data)")
    return plan(config, world_size, seq_len=block_size, tokens_per_step=tokens_per_step, max_steps=max_steps,
                train_tokens=train_tokens)


def plan_without_data(model_args: ModelArguments, args: PretrainConfig) -> dict:
    logger.warning("dry run without packed data: vocab from the preset, blocks of max_position_embeddings tokens")
    config = build_llama_config(model_args)
    return schedule(args, config, args.dry_run_world_size or args.world_size, config.max_position_embeddings, None)


def build_trainer(model, args: PretrainConfig, tokenizer, packed, block_size: int,
                  document_masking: bool = False) -> PretrainTrainer:
    """The recipe's trainer (also what benchmarks/pretrain_step.py times)."""
    collator = DocumentMaskingCollator(tokenizer.eos_token_id) if document_masking else BlockCollator()
    trainer = PretrainTrainer(
        model=model,
        args=args,
        train_dataset=packed["train"],
        eval_dataset=packed["validation"] if "validation" in packed and len(packed["validation"]) else None,
        data_collator=collator,
        processing_class=tokenizer,
    )
    return setup_trainer(trainer, seq_len=block_size, peak_tflops=args.peak_tflops_per_device)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    parser = make_parser()
    model_args, data_args, args, cont = parser.parse(argv)
    try:
        check_continue(model_args, cont)
        if args.dry_run and not Path(data_args.dataset_path).exists() and not cont.model_name_or_path:
            return print(format_plan({"preset": model_args.model_preset, **plan_without_data(model_args, args)}))
        packed, stats = load_packed(Path(data_args.dataset_path))
        tokenizer = tokenizer_from(data_args.tokenizer_name_or_path or stats["tokenizer"]["name_or_path"])
        config = (load_config(cont, tokenizer, model_args.pad_vocab_to_multiple_of) if cont.model_name_or_path else
                  build_llama_config(model_args, tokenizer=tokenizer, use_cache=False))  # no KV cache in training
        check_compatible(packed, stats, tokenizer, config)
        resume = resolve_resume(args.resume_from_checkpoint, args.output_dir)
        train_stats = stats["splits"]["train"]
        p = {"preset": cont.model_name_or_path or model_args.model_preset,
             **schedule(args, config, args.dry_run_world_size or args.world_size, train_stats["block_size"],
                        train_stats["packed_tokens"])}
    except (ConfigError, OSError) as e:
        parser.error(str(e))
    if args.dry_run:
        return print(format_plan(p))
    args.max_steps = p["max_steps"]

    set_seed(args.seed)
    # Built after the TrainingArguments: under ZeRO-3 they have registered DeepSpeed's config, so from_config runs
    # inside zero.Init and every rank only ever allocates its own shard.
    attn = attention_implementation(data_args.attn_implementation)
    model = (load_pretrained(cont, config, attn, p["max_steps"], tokenizer) if cont.model_name_or_path else
             AutoModelForCausalLM.from_config(config, attn_implementation=attn))
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    if args.activation_checkpointing:
        model.config.use_cache = False

    trainer = build_trainer(model, args, tokenizer, packed, p["seq_len"], data_args.document_masking)
    if trainer.is_world_process_zero():
        write_run_info(args.output_dir, model_args, data_args, args, cont, recipe="pretrain")
        # the packed data's stats: tokens per split and, for a weighted mixture, each source's realised share
        atomic_write_text(Path(args.output_dir) / "data_stats.json", json.dumps(stats, indent=2) + "\n")
        print(format_plan(p))
    train_and_save(trainer, resume)
    if trainer.is_world_process_zero():
        logger.info("model saved to %s", args.output_dir)


if __name__ == "__main__":
    with stop_cleanly_when_disk_full("pretrain.py"):
        main(sys.argv[1:])
    exit_skipping_teardown_on_cpu_ranks()
