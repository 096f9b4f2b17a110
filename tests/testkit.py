"""Helpers shared by the test modules (import as `from testkit import ...`; fixtures live in conftest.py)."""

import os
from pathlib import Path

import pytest

from llm_recipes.recipe_loader import load_recipe  # noqa: F401 (re-exported for the tests)

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("DATA_DIR", REPO_ROOT.parent / "shared" / "data")).resolve()


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


def pretrain_args(packed_dir: Path, output_dir: Path, *extra: str) -> list[str]:
    """CLI of a quick tiny-preset pretraining run on the packed test data."""
    return ["--config", str(REPO_ROOT / "configs/pretrain/tiny.yaml"), "--dataset_path", str(packed_dir),
            "--output_dir", str(output_dir), "--report_to", "none", "--per_device_train_batch_size", "8",
            "--warmup_steps", "5", *extra]
