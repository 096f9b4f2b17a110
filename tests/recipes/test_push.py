"""make push against a loopback stand-in for the Hub (HF_ENDPOINT): what it received, what a client pulls back, and
that the token is used but never shown. Also the trainers' own push_to_hub during training."""

import json
import os
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM

from fakehub import FakeHub
import recipes.export
from testkit import DATA_DIR, REPO_ROOT, pretrain_args, run_recipe_error
import warmproc

TOKEN = "hf_testTokenThatMustNeverBePrinted"


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_chat_model_dir):
    out = tmp_path_factory.mktemp("export") / "tiny-chat"
    recipes.export.main(["--model_name_or_path", str(tiny_chat_model_dir), "--output_dir", str(out),
                                "--repo_id", "tester/tiny-chat", "--dtype", "float32"])
    return out


def hub_env(hub, tmp_path, token=TOKEN):
    """The environment of a client process that talks to `hub`; HF_HOME empty so no saved login leaks in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING", "TRANSFORMERS_OFFLINE"))}
    env.update(HF_ENDPOINT=hub.url if hub else "http://127.0.0.1:9", HF_HUB_DISABLE_XET="1", HF_HUB_OFFLINE="0",
               HF_HOME=str(tmp_path / "hf_home"), HF_HUB_DISABLE_TELEMETRY="1", DATA_DIR=str(DATA_DIR))
    if token:
        env["HF_TOKEN"] = token
    return env


def push(env, *args):
    return warmproc.run([sys.executable, str(REPO_ROOT / "recipes/push.py"), *args], capture_output=True, text=True,
                        env=env, cwd=REPO_ROOT)


def test_dry_run_lists_the_files_without_network_or_token(exported, tmp_path):
    done = push(hub_env(None, tmp_path, token=None), "--folder", str(exported), "--dry_run")
    assert done.returncode == 0, done.stderr
    assert "would upload" in done.stdout and "tester/tiny-chat@main" in done.stdout
    for name in ("model.safetensors", "README.md", "tokenizer_config.json", "training_recipe/01-export.yaml"):
        assert name in done.stdout
    assert "token: none" in done.stdout


@pytest.mark.parametrize("args, expected", [
    (["--repo_id", "bad//name"], "repo_id 'bad//name'"),
    (["--repo_id", "no-namespace"], "use <user or org>/<name>"),
])
def test_invalid_repo_id_is_one_line(exported, args, expected, capsys):
    err = run_recipe_error("push", ["--folder", str(exported), "--dry_run", *args], capsys)
    assert expected in err


def test_folder_that_is_not_an_export(tmp_path, tiny_chat_model_dir, capsys):
    assert "no README.md" in run_recipe_error("push", ["--folder", str(tiny_chat_model_dir), "--repo_id", "a/b",
                                                       "--dry_run"], capsys)
    assert "no such folder" in run_recipe_error("push", ["--folder", str(tmp_path / "nope"), "--dry_run"], capsys)


def test_push_without_a_token_stops_before_any_request(exported, tmp_path):
    with FakeHub() as hub:
        done = push(hub_env(hub, tmp_path, token=None), "--folder", str(exported))
    assert done.returncode == 2 and "no Hub token" in done.stderr and hub.requests == []


PULL = """
import sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
repo, revision, out = sys.argv[1:]
tok = AutoTokenizer.from_pretrained(repo, revision=revision)
model = AutoModelForCausalLM.from_pretrained(repo, revision=revision, dtype=torch.float32)
ids = tok.apply_chat_template([{"role": "user", "content": "hi 你好"}], add_generation_prompt=True, return_dict=True)
with torch.no_grad():
    torch.save({"ids": ids["input_ids"], "logits": model(torch.tensor([ids["input_ids"]])).logits[0]}, out)
"""


def test_push_uploads_the_folder_and_a_client_pulls_the_same_model(exported, tmp_path):
    with FakeHub() as hub:
        env = hub_env(hub, tmp_path)
        done = push(env, "--folder", str(exported), "--repo_id", "tester/pushed", "--private", "true",
                    "--revision", "v0.1")
        assert done.returncode == 0, done.stderr[-3000:]
        received = hub.files("tester/pushed", "v0.1")
        local = {p.relative_to(exported).as_posix(): p.read_bytes() for p in exported.rglob("*") if p.is_file()}
        assert received == local
        assert hub.repos["tester/pushed"].private
        assert hub.repos["tester/pushed"].commits[-1]["summary"] == "Upload pushed from llm-recipes (export)"
        assert TOKEN in hub.tokens_seen  # sent as the Authorization header
        assert TOKEN not in done.stdout + done.stderr
        assert any("lfs/objects/batch" in r for r in hub.requests)  # weights went the LFS way
        pulled = warmproc.run([sys.executable, "-c", PULL, "tester/pushed", "v0.1", str(tmp_path / "pulled.pt")],
                              capture_output=True, text=True, env={**env, "HF_TOKEN": TOKEN})
        assert pulled.returncode == 0, pulled.stderr[-3000:]
    got = torch.load(tmp_path / "pulled.pt")
    model = AutoModelForCausalLM.from_pretrained(exported, dtype=torch.float32)
    with torch.no_grad():
        expected = model(torch.tensor([got["ids"]])).logits[0]
    assert torch.equal(got["logits"], expected)


@pytest.mark.slow
def test_pretraining_pushes_checkpoints_while_it_trains(tiny_packed_dir, tmp_path):
    """The trainers' own push_to_hub / hub_strategy: every save goes to the Hub repo as training runs."""
    with FakeHub() as hub:
        env = hub_env(hub, tmp_path)
        args = pretrain_args(tiny_packed_dir, tmp_path / "run", "--max_steps", "4", "--save_steps", "2",
                             "--eval_strategy", "no", "--push_to_hub", "true", "--hub_model_id", "tester/live",
                             "--hub_strategy", "every_save", "--hub_private_repo", "true")
        done = warmproc.run([sys.executable, str(REPO_ROOT / "recipes/pretrain.py"), *args], capture_output=True,
                            text=True, env=env, cwd=REPO_ROOT)
        assert done.returncode == 0, done.stderr[-3000:]
        files = hub.files("tester/live")
        summaries = [c["summary"] for c in hub.repos["tester/live"].commits]
    assert "model.safetensors" in files and "config.json" in files and "README.md" in files
    assert len(summaries) >= 2  # a push per save, then the final one
    assert TOKEN not in done.stdout + done.stderr
    config = json.loads(files["config.json"])
    assert config["model_type"] == "llama"
