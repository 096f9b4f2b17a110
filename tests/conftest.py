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


# The shipped samples read directly (English Wikipedia, Shakespeare, web text; Chinese ci, Analects, hotel reviews),
# so the tests need no data_prep run. The demo's configs/{tokenizer,pack}/tiny.yaml read data_prep's output instead.
SHIPPED_CORPUS = """
train_sources:
  - {path: "${DATA_DIR}/wikitext2/valid.txt", sample_by: line}
  - {path: "${DATA_DIR}/tinyshakespeare/input.txt", sample_by: paragraph}
  - {path: "${DATA_DIR}/c4_demo/c4_demo.jsonl"}
  - {path: "${DATA_DIR}/chinese_poetry/ci.song.0.json", text_column: paragraphs}
  - {path: "${DATA_DIR}/chinese_poetry/lunyu.json", text_column: paragraphs}
  - {path: "${DATA_DIR}/chnsenticorp/ChnSentiCorp_htl_all.csv", text_column: review}
validation_split_size: 0.05
seed: 42
"""


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
    load_recipe("train_tokenizer").main(["--config", str(tokenizer_config), "--output_dir", str(out)])
    return out


@pytest.fixture(scope="session")
def tiny_packed_dir(tmp_path_factory, tiny_tokenizer_dir, pack_config) -> Path:
    """The shipped corpus (first 4,000 documents) packed into 64-token blocks with the tiny tokenizer."""
    out = tmp_path_factory.mktemp("packed") / "packed"
    load_recipe("pack").main(
        ["--config", str(pack_config), "--tokenizer_name_or_path", str(tiny_tokenizer_dir),
         "--output_dir", str(out), "--block_size", "64", "--max_documents", "4000"]
    )
    return out


def pretrain_args(packed_dir: Path, output_dir: Path, *extra: str) -> list[str]:
    """CLI of a quick tiny-preset pretraining run on the packed test data."""
    return ["--config", str(REPO_ROOT / "configs/pretrain/tiny.yaml"), "--dataset_path", str(packed_dir),
            "--output_dir", str(output_dir), "--report_to", "none", "--per_device_train_batch_size", "8",
            "--warmup_steps", "5", *extra]
