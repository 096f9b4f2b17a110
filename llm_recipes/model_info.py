"""Plan hardware before launching: parameters, training FLOPs per token and DeepSpeed ZeRO-3 memory per GPU/CPU.

    python -m llm_recipes.model_info --config configs/model/7b.yaml --num_gpus 8
    python -m llm_recipes.model_info --model_preset 1b --num_gpus 8 --num_nodes 2 --seq_len 2048
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field

from llm_recipes.config import ConfigError, RecipeParser
from llm_recipes.model import (
    ModelArguments,
    build_llama_config,
    count_parameters,
    format_zero3_rows,
    meta_model,
    training_flops_per_token,
    zero3_memory_estimates,
)

@dataclass
class HardwareArguments:
    num_gpus: int = field(default=8, metadata={"help": "GPUs per node."})
    num_nodes: int = field(default=1, metadata={"help": "Number of nodes."})
    seq_len: int | None = field(
        default=None, metadata={"help": "Training sequence length for the attention FLOPs; default max_position_embeddings."}
    )
    tokenizer_name_or_path: str | None = field(
        default=None, metadata={"help": "Tokenizer folder or Hub id; the vocab then follows it (rounded up)."}
    )
    json: bool = field(default=False, metadata={"help": "Print one JSON object instead of the table."})


def plan(config, num_gpus: int = 1, num_nodes: int = 1, seq_len: int | None = None, *,
         tokens_per_step: int | None = None, max_steps: int | None = None, train_tokens: int | None = None) -> dict:
    """Parameters, training FLOPs per token and ZeRO-3 model-state memory of `config` on num_nodes x num_gpus; with
    a schedule (tokens per step, steps, and the packed tokens when known), the run's tokens, epochs and FLOPs too.
    `pretrain --dry_run` and `model_info` both print this."""
    params = count_parameters(meta_model(config))
    seq_len = seq_len or config.max_position_embeddings
    info = {
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "num_hidden_layers": config.num_hidden_layers,
        "head_dim": config.head_dim,
        "params": params.total,
        "embedding_params": params.embedding,
        "non_embedding_params": params.non_embedding,
        "largest_layer_params": params.largest_layer,
        "seq_len": seq_len,
        "train_flops_per_token": training_flops_per_token(config, params.total, seq_len),
        "num_gpus_per_node": num_gpus,
        "num_nodes": num_nodes,
        "zero3": zero3_memory_estimates(params, num_gpus, num_nodes),
    }
    if max_steps:
        info.update(tokens_per_step=tokens_per_step, max_steps=max_steps, tokens=max_steps * tokens_per_step,
                    epochs=max_steps * tokens_per_step / train_tokens if train_tokens else None)
    return info


def model_info(model_args: ModelArguments, hw: HardwareArguments) -> dict:
    tokenizer = None
    if hw.tokenizer_name_or_path:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(hw.tokenizer_name_or_path)
    config = build_llama_config(model_args, tokenizer=tokenizer)
    return {"preset": model_args.model_preset, **plan(config, hw.num_gpus, hw.num_nodes, hw.seq_len)}


def format_plan(info: dict) -> str:
    lines = [
        f"model: {info.get('preset') or 'custom'}  (vocab {info['vocab_size']:,}, hidden {info['hidden_size']}, "
        f"layers {info['num_hidden_layers']}, head_dim {info['head_dim']})",
        f"parameters:            {info['params']:>16,}",
        f"  embedding + head:    {info['embedding_params']:>16,}",
        f"  non-embedding:       {info['non_embedding_params']:>16,}",
        f"  largest layer:       {info['largest_layer_params']:>16,}",
        f"train FLOPs/token:     {info['train_flops_per_token']:>16,}  (6N + 12*L*H*T, T={info['seq_len']})",
    ]
    if info.get("max_steps"):
        epochs = f"{info['epochs']:.2f} epochs of the packed data" if info["epochs"] is not None else "packed data not read"
        lines.append(f"plan:                  {info['max_steps']:,} steps x {info['tokens_per_step']:,} tokens = "
                     f"{info['tokens']:,} tokens ({epochs}), {info['train_flops_per_token'] * info['tokens']:.3e} FLOPs")
    lines += [
        "",
        f"DeepSpeed ZeRO-3 model states (params+grads+Adam, zero.Init) on {info['num_nodes']} node(s) x "
        f"{info['num_gpus_per_node']} GPU(s); activations come on top:",
    ]
    lines += format_zero3_rows(info["zero3"])
    return "\n".join(lines)


def make_parser() -> RecipeParser:
    return RecipeParser((ModelArguments, HardwareArguments))


def main(argv: list[str] | None = None) -> None:
    parser = make_parser()
    model_args, hw = parser.parse(argv)
    try:
        info = model_info(model_args, hw)
    except ConfigError as e:
        parser.error(str(e))
    print(json.dumps(info, indent=2) if hw.json else format_plan(info))


if __name__ == "__main__":
    main(sys.argv[1:])
