"""Shared test fixtures. Tests run on the real data in DATA_DIR (default ../shared/data), never on Hub downloads."""

import os
from pathlib import Path

import pytest

import recipes.pack
import recipes.train_tokenizer
from testkit import DATA_DIR, REPO_ROOT, SHIPPED_CORPUS

# Nothing in the test suite may reach the Hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA_DIR.is_dir():
        pytest.fail(f"shipped data not found at {DATA_DIR}; set DATA_DIR")
    return DATA_DIR


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def tokenizer_config(tmp_path_factory) -> Path:
    """A tokenizer recipe on the shipped corpus (vocab 2048 to be quick)."""
    path = tmp_path_factory.mktemp("cfg") / "tokenizer.yaml"
    path.write_text(SHIPPED_CORPUS + "output_dir: unused\nvocab_size: 2048\nmodel_max_length: 1024\n")
    return path


@pytest.fixture(scope="session")
def pack_config(tmp_path_factory) -> Path:
    """A pack recipe on the shipped corpus: the same sources and split as tokenizer_config."""
    path = tmp_path_factory.mktemp("cfg") / "pack.yaml"
    path.write_text(SHIPPED_CORPUS + "tokenizer_name_or_path: unused\noutput_dir: unused\nnum_proc: 2\n")
    return path


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory, tokenizer_config) -> Path:
    """The tiny tokenizer (vocab 2048) trained on the shipped English + Chinese corpus, once per session."""
    out = tmp_path_factory.mktemp("tok") / "tokenizer"
    recipes.train_tokenizer.main(["--config", str(tokenizer_config), "--output_dir", str(out)])
    return out


@pytest.fixture(scope="session")
def tiny_packed_dir(tmp_path_factory, tiny_tokenizer_dir, pack_config) -> Path:
    """The shipped corpus (first 4,000 documents) packed into 64-token blocks with the tiny tokenizer."""
    out = tmp_path_factory.mktemp("packed") / "packed"
    recipes.pack.main(
        ["--config", str(pack_config), "--tokenizer_name_or_path", str(tiny_tokenizer_dir),
         "--output_dir", str(out), "--block_size", "64", "--max_documents", "4000"]
    )
    return out


@pytest.fixture(scope="session")
def tiny_chat_model_dir(tmp_path_factory, tiny_tokenizer_dir) -> Path:
    """A random-init tiny chat model (ChatML tokenizer, stops at <|im_end|>) with rope_theta 500,000: a value that
    transformers 4.x would silently replace by 10,000 without a top-level rope_theta, so exports must carry it."""
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    from llm_recipes.model import ModelArguments, build_llama_config
    from llm_recipes.tokenizer import stop_token_ids

    out = tmp_path_factory.mktemp("chat") / "model"
    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    config = build_llama_config(ModelArguments(model_preset="tiny"), tokenizer=tokenizer)
    config.rope_parameters = {"rope_type": "default", "rope_theta": 500000.0}
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = stop_token_ids(tokenizer)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
