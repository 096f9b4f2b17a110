"""Secrets are used but written nowhere. A Hub token on the command line (the trainers' `--hub_token`) stays out of
run_info.json, the pickled training_args.bin of the run and its checkpoints, and the log. Every other entry point,
run with tokens planted in its environment (HF_TOKEN, WANDB_API_KEY), writes them into no file and no log line. The
same logs, as a user's console: none of the library noise we silence or fixed at its cause (testkit.NOISE)."""

import os
import sys

import pytest
import yaml

from testkit import DATA_DIR, PLANTED_ENV, REPO_ROOT, TOKEN, noise, pretrain_args, secret_leaks
import warmproc


def run(args, tmp_path):
    done = warmproc.run([sys.executable, *args, "--hub_token", TOKEN], cwd=REPO_ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert noise(done.stdout + done.stderr) == []
    return done.stdout + done.stderr


@pytest.mark.slow
def test_pretrain_keeps_a_cli_token_out_of_every_file(tiny_packed_dir, tmp_path):
    out = tmp_path / "run"
    log = run([str(REPO_ROOT / "recipes/pretrain.py"),
               *pretrain_args(tiny_packed_dir, out, "--max_steps", "2", "--save_steps", "1", "--eval_strategy", "no")],
              tmp_path)
    assert (out / "checkpoint-2" / "training_args.bin").is_file() and (out / "run_info.json").is_file()
    assert "<redacted>" in (out / "run_info.json").read_text()
    assert secret_leaks(out, log) == []


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
    assert secret_leaks(out, log) == []


# --- every other entry point, with the tokens in its environment ---------------------------------------------------


# pretrain and sft: above; consolidate: tests/recipes/test_pretrain.py (it needs a ZeRO-3 checkpoint).
# entry point -> command; {out}: its output folder (what it writes, searched whole), {tok} / {model} / {adapter} /
# {export}: inputs made by the fixtures
ENTRY_POINTS = {
    "data_prep": ["-m", "data_prep", "--config", "configs/data/tiny.yaml", "--output_dir", "{out}"],
    "train_tokenizer": ["recipes/train_tokenizer.py", "--config", "{tok_config}", "--output_dir", "{out}"],
    "pack": ["recipes/pack.py", "--config", "{pack_config}", "--tokenizer_name_or_path", "{tok}", "--output_dir",
             "{out}", "--block_size", "64", "--max_documents", "200"],
    "eval": ["recipes/eval.py", "--config", "configs/eval/tiny.yaml", "--model_name_or_path", "{model}",
                 "--output_dir", "{out}", "--tasks", "generation"],
    "export+push": ["recipes/export.py", "--model_name_or_path", "{model}", "--output_dir", "{out}", "--repo_id",
                    "tester/tiny", "&&", "recipes/push.py", "--folder", "{out}", "--dry_run"],
    "merge_lora": ["recipes/merge_lora.py", "--adapter_dir", "{adapter}", "--output_dir", "{out}"],
    "extend_tokenizer": ["recipes/extend_tokenizer.py", "--config", "configs/tokenizer/extend_zh.yaml",
                         "--base_tokenizer_name_or_path", "{tok}", "--output_dir", "{out}", "--vocab_size", "3000",
                         "--validation_sources", "${{DATA_DIR}}/c4_demo/c4_demo.jsonl"],
    "dpo": ["recipes/dpo.py", "--config", "configs/dpo/tiny.yaml", "--model_name_or_path", "{model}", "--output_dir",
            "{out}", "--max_steps", "2", "--eval_steps", "2", "--save_steps", "2", "--max_length", "128",
            "--max_prompt_length", "64"],
    "model_info": ["-m", "llm_recipes.model_info", "--model_preset", "7b"],
    "report": ["recipes/report.py", "--runs", "{packed_run}", "--output_dir", "{out}"],
}


@pytest.mark.slow
@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_entry_point_writes_no_planted_secret(entry, tmp_path, tokenizer_config, pack_config, tiny_tokenizer_dir,
                                              tiny_chat_model_dir, lora_adapter, tiny_packed_dir):
    out = tmp_path / "out"
    values = {"out": out, "tok_config": tokenizer_config, "pack_config": pack_config, "tok": tiny_tokenizer_dir,
              "model": tiny_chat_model_dir, "adapter": lora_adapter, "packed_run": tiny_packed_dir.parent}
    env = {**os.environ, **PLANTED_ENV, "DATA_DIR": str(DATA_DIR)}
    command, log = [a.format(**values) for a in ENTRY_POINTS[entry]], ""
    while command:  # `a && b`: one command after the other
        step, command = (command[:command.index("&&")], command[command.index("&&") + 1:]) if "&&" in command \
            else (command, [])
        done = warmproc.run([sys.executable, *step], cwd=REPO_ROOT, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
        log += done.stdout + done.stderr
    assert noise(log) == []
    assert entry == "model_info" or out.is_dir()
    assert secret_leaks(out, log) == [] if out.is_dir() else TOKEN not in log
