"""Shared test fixtures. Tests run on the real data in DATA_DIR (default ../shared/data), never on Hub downloads."""

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("DATA_DIR", REPO_ROOT.parent / "shared" / "data")).resolve()

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


def load_recipe(name: str):
    """Import recipes/<name>.py as a module (recipes are scripts, not a package) to call its main(argv)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"recipe_{name}", REPO_ROOT / "recipes" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve string annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def run_recipe_error(name: str, argv: list[str], capsys) -> str:
    """Run a recipe that must refuse its input: returns stderr, asserts the usage-error exit code 2."""
    with pytest.raises(SystemExit) as exc:
        load_recipe(name).main(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory) -> Path:
    """The tiny demo tokenizer (configs/tokenizer/tiny.yaml, vocab 2048 to be quick), trained once per session."""
    out = tmp_path_factory.mktemp("tok") / "tokenizer"
    load_recipe("train_tokenizer").main(
        ["--config", str(REPO_ROOT / "configs/tokenizer/tiny.yaml"), "--output_dir", str(out), "--vocab_size", "2048"]
    )
    return out


@pytest.fixture(scope="session")
def tiny_packed_dir(tmp_path_factory, tiny_tokenizer_dir) -> Path:
    """The demo corpus (first 4,000 documents) packed into 64-token blocks with the tiny tokenizer."""
    out = tmp_path_factory.mktemp("packed") / "packed"
    load_recipe("pack").main(
        ["--config", str(REPO_ROOT / "configs/pack/tiny.yaml"), "--tokenizer_name_or_path", str(tiny_tokenizer_dir),
         "--output_dir", str(out), "--block_size", "64", "--max_documents", "4000"]
    )
    return out


def pretrain_args(packed_dir: Path, output_dir: Path, *extra: str) -> list[str]:
    """CLI of a quick tiny-preset pretraining run on the packed test data."""
    return ["--config", str(REPO_ROOT / "configs/pretrain/tiny.yaml"), "--dataset_path", str(packed_dir),
            "--output_dir", str(output_dir), "--report_to", "none", "--per_device_train_batch_size", "8",
            "--warmup_steps", "5", *extra]
