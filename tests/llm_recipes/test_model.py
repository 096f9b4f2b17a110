import json
import sys

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from llm_recipes.config import ConfigError
from llm_recipes.model import (
    ModelArguments,
    build_llama_config,
    count_parameters,
    meta_model,
    round_up,
    training_flops_per_token,
    zero3_memory_estimates,
)
import warmproc


def count(preset, **overrides):
    config = build_llama_config(ModelArguments(model_preset=preset, **overrides))
    return config, count_parameters(meta_model(config))


def test_7b_is_exactly_llama2_7b():
    config, params = count("7b")
    assert params.total == 6_738_415_616
    assert (config.hidden_size, config.intermediate_size, config.num_hidden_layers) == (4096, 11008, 32)
    assert config.num_attention_heads == 32 and config.vocab_size == 32000 and config.max_position_embeddings == 4096
    assert config.tie_word_embeddings is False and config.hidden_act == "silu"
    # built on the meta device: no memory was touched
    assert next(meta_model(config).parameters()).device.type == "meta"


def formula(c):
    """Closed-form LLaMA parameter count: attention + SwiGLU + 2 RMSNorms per layer, final norm, embeddings."""
    head_dim = c.hidden_size // c.num_attention_heads
    attn = c.hidden_size * head_dim * (2 * c.num_attention_heads + 2 * c.num_key_value_heads)
    mlp = 3 * c.hidden_size * c.intermediate_size
    layer = attn + mlp + 2 * c.hidden_size
    emb = c.vocab_size * c.hidden_size * (1 if c.tie_word_embeddings else 2)
    return c.num_hidden_layers * layer + c.hidden_size + emb


@pytest.mark.parametrize(
    "preset,low,high",
    [("tiny", 0.5e6, 2e6), ("160m", 150e6, 175e6), ("1b", 1.0e9, 1.2e9), ("7b", 6.7e9, 6.8e9)],
)
def test_preset_sizes(preset, low, high):
    config, params = count(preset)
    assert low <= params.total <= high
    assert params.total == formula(config)
    assert config.head_dim >= 32  # vLLM refuses smaller heads
    assert params.embedding == config.vocab_size * config.hidden_size * 2


def test_field_override_beats_preset():
    config, params = count("7b", num_hidden_layers=2)
    assert config.num_hidden_layers == 2 and config.hidden_size == 4096


def tokenizer_with(n_tokens):
    vocab = {f"t{i}": i for i in range(n_tokens - 3)}
    vocab.update({"<s>": n_tokens - 3, "</s>": n_tokens - 2, "<pad>": n_tokens - 1})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


@pytest.mark.parametrize("n_tokens,expected", [(1000, 1024), (1024, 1024), (1025, 1088), (31999, 32000)])
def test_vocab_follows_tokenizer_rounded_to_64(n_tokens, expected):
    tok = tokenizer_with(n_tokens)
    config = build_llama_config(ModelArguments(model_preset="tiny"), tokenizer=tok)
    assert config.vocab_size == expected
    assert config.bos_token_id == tok.bos_token_id and config.eos_token_id == tok.eos_token_id
    assert config.pad_token_id == tok.pad_token_id


def test_round_up():
    assert [round_up(v, 64) for v in (1, 64, 65, 32000)] == [64, 64, 128, 32000]
    assert round_up(1001, 1) == 1001


def test_flops_per_token_llama2_7b():
    config, params = count("7b")
    flops = training_flops_per_token(config, params.total, 4096)
    assert flops == 6 * 6_738_415_616 + 12 * 32 * 4096 * 4096  # 46.9 GFLOP/token
    assert 46.8e9 < flops < 46.9e9


def test_zero3_estimate_shrinks_with_more_gpus_and_offload():
    _, params = count("7b")
    one, eight = zero3_memory_estimates(params, 1), zero3_memory_estimates(params, 8)
    assert eight[0]["per_gpu_bytes"] < one[0]["per_gpu_bytes"]
    # 16-18 bytes/param of model states over 8 GPUs is ~13-15 GiB each (FINDINGS §5)
    assert 12 * 2**30 < eight[0]["per_gpu_bytes"] < 16 * 2**30
    assert eight[2]["per_gpu_bytes"] < eight[1]["per_gpu_bytes"] < eight[0]["per_gpu_bytes"]


def test_unknown_preset_and_incomplete_shape():
    with pytest.raises(ConfigError, match="available: .*7b"):
        build_llama_config(ModelArguments(model_preset="70b"))
    with pytest.raises(ConfigError, match="missing"):
        build_llama_config(ModelArguments(hidden_size=64))


def test_model_info_cli(repo_root):
    out = warmproc.run(
        [sys.executable, "-m", "llm_recipes.model_info", "--config", "configs/model/7b.yaml", "--num_gpus", "8", "--json"],
        cwd=repo_root, capture_output=True, text=True, check=True,
    )
    info = json.loads(out.stdout)
    assert info["params"] == 6_738_415_616 and info["num_gpus_per_node"] == 8
    assert [row["offload_optimizer"] for row in info["zero3"]] == [False, True, True]


def test_model_info_cli_bad_key(repo_root, tmp_path):
    bad = tmp_path / "m.yaml"
    bad.write_text("hidden_size: 64\nnum_layers: 2\n")
    out = warmproc.run(
        [sys.executable, "-m", "llm_recipes.model_info", "--config", str(bad)], cwd=repo_root, capture_output=True, text=True
    )
    assert out.returncode == 2 and "num_layers" in out.stderr and str(bad) in out.stderr
