"""What keeps local paths and tokens out of a published folder."""

import json
import shutil
from pathlib import Path

import pytest

from llm_recipes.config import ConfigError
from llm_recipes.hub.folder import check_no_leaks, redact_paths
from llm_recipes.run_info import REPO_ROOT
from testkit import FAMILIES, MODELS_DIR


def test_redact_rewrites_local_paths_even_inside_longer_strings(tmp_path, monkeypatch):
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    config = {"model_name_or_path": str(REPO_ROOT / "outputs/tiny/sft"),
              "datasets": [{"path": str(tmp_path / "data" / "sst2.tsv")}],
              "command": f"lm_eval --model_args pretrained={REPO_ROOT}/outputs/x,dtype=float32",
              "elsewhere": "/opt/models/base", "hub": "tester/model", "lr": 0.1}
    assert redact_paths(config) == {"model_name_or_path": "./outputs/tiny/sft",
                              "datasets": [{"path": "${DATA_DIR}/sst2.tsv"}],
                              "command": "lm_eval --model_args pretrained=./outputs/x,dtype=float32",
                              "elsewhere": "<local>/base", "hub": "tester/model", "lr": 0.1}


def test_a_folder_with_a_token_or_a_local_path_is_refused(tmp_path, monkeypatch):
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "config.json").write_text('{"a": 1}')
    check_no_leaks(folder)
    monkeypatch.setenv("HF_TOKEN", "hf_secretvalue123")
    (folder / "README.md").write_text("token hf_secretvalue123")
    with pytest.raises(ConfigError, match="contains a Hub token"):
        check_no_leaks(folder)
    monkeypatch.delenv("HF_TOKEN")
    (folder / "README.md").write_text("pushed with --hub_token hf_" + "a1B2" * 9)  # a token that came from a CLI flag
    with pytest.raises(ConfigError, match="README.md: contains a Hub token"):
        check_no_leaks(folder)
    (folder / "README.md").write_text(f"trained from {tmp_path}/base")
    with pytest.raises(ConfigError, match="contains the local path"):
        check_no_leaks(folder)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_familys_vocabulary_is_not_a_leak_but_a_path_beside_it_is(family, tmp_path):
    """Llama 3's and Qwen's byte-level vocabularies hold pieces such as `/root` and `/tmp`: text, not this machine."""
    folder = tmp_path / "export"
    shutil.copytree(MODELS_DIR / family, folder)
    check_no_leaks(folder)
    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    tokenizer["normalizer"] = {"type": "Replace", "pattern": {"String": f"{Path.home()}/x"}, "content": ""}
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer))
    with pytest.raises(ConfigError, match="tokenizer.json: contains the local path"):
        check_no_leaks(folder)
