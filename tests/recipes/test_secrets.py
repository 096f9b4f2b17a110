"""A Hub token given on the command line is used, but written nowhere: not in run_info.json, not in the pickled
training_args.bin of the run or its checkpoints, not in the log."""

import subprocess
import sys

import pytest
import yaml

from testkit import REPO_ROOT, pretrain_args

TOKEN = "hf_" + "PlantedSecret9" * 3


def leaks(folder, log):
    found = [str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and TOKEN.encode() in p.read_bytes()]
    return found + (["log"] if TOKEN in log else [])


def run(args, tmp_path):
    done = subprocess.run([sys.executable, *args, "--hub_token", TOKEN], cwd=REPO_ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout + done.stderr


@pytest.mark.slow
def test_pretrain_keeps_a_cli_token_out_of_every_file(tiny_packed_dir, tmp_path):
    out = tmp_path / "run"
    log = run([str(REPO_ROOT / "recipes/pretrain.py"),
               *pretrain_args(tiny_packed_dir, out, "--max_steps", "2", "--save_steps", "1", "--eval_strategy", "no")],
              tmp_path)
    assert (out / "checkpoint-2" / "training_args.bin").is_file() and (out / "run_info.json").is_file()
    assert "<redacted>" in (out / "run_info.json").read_text()
    assert leaks(out, log) == []


@pytest.mark.slow
def test_sft_keeps_a_cli_token_out_of_every_file(tiny_chat_model_dir, data_dir, tmp_path):
    config = yaml.safe_load((REPO_ROOT / "configs/sft/tiny.yaml").read_text())
    config.update(datasets=[{"path": str(data_dir / "alpaca_gpt4_en_demo/alpaca_en_demo.json"), "max_samples": 40}],
                  report_to="none", max_steps=2, save_steps=1, eval_strategy="no", eval_on_start=False,
                  load_best_model_at_end=False, early_stopping_patience=None, sample_prompt=None, max_length=128)
    path = tmp_path / "sft.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "sft"
    log = run([str(REPO_ROOT / "recipes/sft.py"), "--config", str(path), "--model_name_or_path",
               str(tiny_chat_model_dir), "--output_dir", str(out)], tmp_path)
    assert (out / "training_args.bin").is_file()
    assert leaks(out, log) == []
