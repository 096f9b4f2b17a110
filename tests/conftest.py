"""Shared test fixtures. Tests run on the real data in DATA_DIR (default ../shared/data), never on Hub downloads."""

import os
from pathlib import Path

import pytest

import recipes.pack
import recipes.train_tokenizer
from testkit import DATA_DIR, MODELS_DIR, REPO_ROOT, SHIPPED_CORPUS, built_once

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


TOKENIZER_YAML = SHIPPED_CORPUS + "output_dir: unused\nvocab_size: 2048\nmodel_max_length: 1024\n"
PACK_YAML = SHIPPED_CORPUS + "tokenizer_name_or_path: unused\noutput_dir: unused\nnum_proc: 2\n"


@pytest.fixture(scope="session")
def tokenizer_config(tmp_path_factory) -> Path:
    """A tokenizer recipe on the shipped corpus (vocab 2048 to be quick)."""
    path = tmp_path_factory.mktemp("cfg") / "tokenizer.yaml"
    path.write_text(TOKENIZER_YAML)
    return path


@pytest.fixture(scope="session")
def pack_config(tmp_path_factory) -> Path:
    """A pack recipe on the shipped corpus: the same sources and split as tokenizer_config."""
    path = tmp_path_factory.mktemp("cfg") / "pack.yaml"
    path.write_text(PACK_YAML)
    return path


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(data_dir) -> Path:
    """The tiny tokenizer (vocab 2048) trained on the shipped English + Chinese corpus, built once (built_once)."""
    def build(out: Path) -> None:
        (out / "tokenizer.yaml").write_text(TOKENIZER_YAML)
        recipes.train_tokenizer.main(["--config", str(out / "tokenizer.yaml"), "--output_dir", str(out / "tokenizer")])

    return built_once("tokenizer", build, inputs=["recipes/train_tokenizer.py", data_dir]) / "tokenizer"


@pytest.fixture(scope="session")
def tiny_packed_dir(tiny_tokenizer_dir, data_dir) -> Path:
    """The shipped corpus (first 4,000 documents) packed into 64-token blocks with the tiny tokenizer, built once."""
    def build(out: Path) -> None:
        (out / "pack.yaml").write_text(PACK_YAML)
        recipes.pack.main(["--config", str(out / "pack.yaml"), "--tokenizer_name_or_path", str(tiny_tokenizer_dir),
                           "--output_dir", str(out / "packed"), "--block_size", "64", "--max_documents", "4000"])

    return built_once("packed", build, inputs=["recipes/pack.py", data_dir], key=str(tiny_tokenizer_dir)) / "packed"


@pytest.fixture(scope="session")
def tiny_sharded_dir(tiny_tokenizer_dir, data_dir) -> Path:
    """The same blocks as tiny_packed_dir as uint16 shards of 97 blocks (several shards, none a batch's multiple)."""
    def build(out: Path) -> None:
        (out / "pack.yaml").write_text(PACK_YAML)
        recipes.pack.main(["--config", str(out / "pack.yaml"), "--tokenizer_name_or_path", str(tiny_tokenizer_dir),
                           "--output_dir", str(out / "packed"), "--block_size", "64", "--max_documents", "4000",
                           "--output_format", "shards", "--shard_blocks", "97"])

    return built_once("sharded", build, inputs=["recipes/pack.py", data_dir], key=str(tiny_tokenizer_dir)) / "packed"


@pytest.fixture(scope="session")
def tiny_chat_model_dir(tiny_tokenizer_dir) -> Path:
    """A random-init tiny chat model (ChatML tokenizer, stops at <|im_end|>) with rope_theta 500,000: a value that
    transformers 4.x would silently replace by 10,000 without a top-level rope_theta, so exports must carry it.
    Shared by every test that uses it: copy it before changing anything in it."""
    def build(out: Path) -> None:
        import torch
        from transformers import AutoTokenizer, LlamaForCausalLM

        from llm_recipes.model import ModelArguments, build_llama_config
        from llm_recipes.tokenizer import stop_token_ids

        tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
        config = build_llama_config(ModelArguments(model_preset="tiny"), tokenizer=tokenizer)
        config.rope_parameters = {"rope_type": "default", "rope_theta": 500000.0}
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
        model.generation_config.eos_token_id = stop_token_ids(tokenizer)
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.save_pretrained(out / "model")
        tokenizer.save_pretrained(out / "model")

    return built_once("chat-model", build, key=str(tiny_tokenizer_dir)) / "model"


@pytest.fixture(scope="session")
def lora_adapter(tiny_chat_model_dir) -> Path:
    """A LoRA adapter on the tiny chat model, with its tokenizer, and non-zero B (init_lora_weights=False: the default
    init is a no-op and would prove nothing). Shared: copy it before changing anything in it."""
    def build(out: Path) -> None:
        import torch
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM, AutoTokenizer

        base = AutoModelForCausalLM.from_pretrained(tiny_chat_model_dir, dtype=torch.float32)
        torch.manual_seed(1)
        model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"],
                                                init_lora_weights=False, task_type="CAUSAL_LM"))
        model.save_pretrained(out / "adapter")
        AutoTokenizer.from_pretrained(tiny_chat_model_dir).save_pretrained(out / "adapter")

    return built_once("lora-adapter", build, key=str(tiny_chat_model_dir)) / "adapter"


@pytest.fixture(scope="session")
def family_model_dir():
    """A model family as a user brings it: the family's real tokenizer, chat template, special tokens and
    generation_config, and random weights of its architecture at a tiny size (the folder's config.json), built once
    per family. Shared: copy it before changing anything in it."""
    def get(family: str) -> Path:
        def build(out: Path) -> None:
            import shutil

            import torch
            from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

            torch.manual_seed(0)
            model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(MODELS_DIR / family))
            model.save_pretrained(out / "model")
            AutoTokenizer.from_pretrained(MODELS_DIR / family).save_pretrained(out / "model")
            shutil.copy(MODELS_DIR / family / "generation_config.json", out / "model")

        return built_once(f"family-{family}", build, inputs=[MODELS_DIR / family]) / "model"

    return get


# --- parallel runs (pytest-xdist, as `make test` runs the suite) ------------------------------------------------------
# Each worker runs its tests on one core: a tiny model's step is mostly Python, and two workers with two torch threads
# each would spin-wait for each other on a 2-core box. Subprocesses inherit the setting; in-process and subprocess
# runs of a kill test see the same thread count either way.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    """Longest first, so that neither worker is left with a long test at the end: the demo, then the rest of the slow
    tests, each group in collection order (xdist's loadgroup hands out grouped tests together, largest group first)."""
    items.sort(key=lambda item: (not item.nodeid.startswith("tests/test_demo.py"),
                                 item.get_closest_marker("slow") is None))


def pytest_collection_finish(session):
    """After selection (-k, -m, file): where a GGUF test will run, llama.cpp's source downloads in the background."""
    if any("llama_cpp_dir" in item.fixturenames for item in session.items):
        from testkit import prefetch_llama_cpp_source

        prefetch_llama_cpp_source()


@pytest.fixture
def fake_sbatch(tmp_path, monkeypatch):
    """tests/fakeslurm.py's sbatch on PATH, recording each call without running the job; like Slurm it refuses a
    script whose #SBATCH lines it would refuse. Returns the JSONL file of the calls."""
    from fakeslurm import install

    calls = install(tmp_path / "bin", tmp_path / "sbatch_calls.jsonl", run=False)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    return calls
