"""What keeps local paths and tokens out of a published folder."""

import json
import shutil
from pathlib import Path

import pytest

from llm_recipes.config import ConfigError
from llm_recipes.hub.folder import card_metadata, check_no_leaks, redact_paths
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


def stage(folder: Path, **config) -> Path:
    """A run folder as our recipes leave it: its resolved config names the model it started from."""
    folder.mkdir(parents=True)
    (folder / "resolved_config.yaml").write_text(json.dumps(config))  # JSON is YAML
    return folder


CHATML = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"


def about(run, **overrides):
    args = dict(license=None, languages=[], tags=[], base_model=None, model_type="llama", chat_template=None,
                eval_results=None)
    return card_metadata(run, **{**args, **overrides})


def test_the_card_says_what_the_run_started_from(tmp_path):
    """base_model, licence and tags follow the run's stages back to its base: a local folder with its own card, a
    Hub id, a Hub cache snapshot, or nothing (from scratch); the languages are those eval measured."""
    base = tmp_path / "bases" / "Llama-3.1-8B"
    base.mkdir(parents=True)
    (base / "README.md").write_text("---\nlicense: llama3.1\n---\n# Llama 3.1\n")
    sft = stage(tmp_path / "sft-lora", model_name_or_path=str(base))
    merged = stage(tmp_path / "sft", adapter_dir=str(sft))
    dpo = stage(tmp_path / "dpo", model_name_or_path=str(merged), learning_rate=1e-6)
    results = {"language_modeling": {"web": {"language": "en"}, "poems": {"language": "zh"}},
               "generation": {"per_language": {"en": {}, "unknown": {}}}}
    for run in (dpo, dpo / "checkpoint-20"):  # a checkpoint inside its run folder: the run's
        assert about(run, eval_results=results) == {"license": "llama3.1", "base_model": "Llama-3.1-8B",
                                                     "languages": ["en", "zh"], "tags": ["llm-recipes", "llama"]}
    # the config wins where it says something
    assert about(dpo, license="mit", languages=["de"], tags=["x"], base_model="org/base") == {
        "license": "mit", "base_model": "org/base", "languages": ["de"], "tags": ["llm-recipes", "llama", "x"]}

    hub = stage(tmp_path / "hub-sft", model_name_or_path="Qwen/Qwen2.5-7B")
    assert about(hub, model_type="qwen2", chat_template=CHATML) == {
        "license": "other", "base_model": "Qwen/Qwen2.5-7B", "languages": [], "tags": ["llm-recipes", "qwen2", "chatml"]}
    snapshot = tmp_path / "hf" / "models--meta-llama--Llama-3.1-8B" / "snapshots" / "0123abc"
    snapshot.mkdir(parents=True)
    assert about(stage(tmp_path / "cached-sft", model_name_or_path=str(snapshot)))["base_model"] == \
        "meta-llama/Llama-3.1-8B"

    pretrain = stage(tmp_path / "pretrain", model_preset="tiny")
    scratch = stage(tmp_path / "scratch-sft", model_name_or_path=str(pretrain))
    assert about(scratch, chat_template=CHATML) == {"license": "other", "base_model": None, "languages": [],
                                                    "tags": ["llm-recipes", "llama", "chatml", "from-scratch"]}
