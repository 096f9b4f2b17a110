import json
import subprocess
from dataclasses import dataclass

import yaml
from transformers import TrainingArguments

from llm_recipes.config import RecipeParser
from llm_recipes.run_info import REPO_ROOT, write_run_info


@dataclass
class ScriptArgs:
    dataset_path: str = "data"
    block_size: int = 128


def test_resolved_config_versions_and_commit(tmp_path):
    out = tmp_path / "run"
    args = RecipeParser((ScriptArgs, TrainingArguments)).parse(
        ["--block_size", "64", "--output_dir", str(out), "--learning_rate", "3e-4", "--hub_token", "hf_secret"]
    )
    write_run_info(out, *args, recipe="test")

    config_text = (out / "resolved_config.yaml").read_text()
    assert "hf_secret" not in config_text and yaml.safe_load(config_text)["hub_token"] is None
    config = yaml.safe_load(config_text)
    assert config["block_size"] == 64 and config["learning_rate"] == 3e-4 and config["lr_scheduler_type"] == "linear"

    # the resolved config replays: parsing it gives the same arguments
    replay = RecipeParser((ScriptArgs, TrainingArguments)).parse(["--config", str(out / "resolved_config.yaml")])
    assert replay[0] == args[0] and replay[1].learning_rate == args[1].learning_rate

    info = json.loads((out / "run_info.json").read_text())
    assert info["packages"]["torch"].startswith("2.13.0")
    assert info["packages"]["transformers"] and info["packages"]["trl"]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert info["git"]["commit"] == (head.stdout.strip() if head.returncode == 0 else None)
    assert not list(out.glob(".*.tmp")), "temporary files left behind"


def test_only_rank0_writes(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    write_run_info(tmp_path / "r1", ScriptArgs())
    assert not (tmp_path / "r1").exists()
