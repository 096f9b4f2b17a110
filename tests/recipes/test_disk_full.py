"""A disk that fills up mid-run: one line, exit code 1, the last complete checkpoint / output kept, nothing
unfinished that looks complete. The failure is injected (an OSError ENOSPC from the Nth write of one kind of file):
this machine cannot mount a small filesystem for a test, and a file-size limit would hit every checkpoint alike."""

import errno
import os

import pytest
import torch
import transformers.modeling_utils as modeling_utils

from llm_recipes.training import CHECKPOINT_COMPLETE, complete_checkpoints
from testkit import REPO_ROOT, pretrain_args, run_as_main


@pytest.fixture
def run_failing(monkeypatch, capsys):
    """Run recipes/<recipe> as `python recipes/<recipe> ...` does (testkit.run_as_main: its own `__main__` block, in
    this process), with torch.save / safetensors' save_file failing with `code` on the Nth write of a file whose name
    ends with `suffix`. Returns the exit code and what it printed."""
    def run(n, suffix, recipe, *args, code="ENOSPC"):
        calls = {"n": 0}

        def failing(real):
            def write(obj, f, *a, **kw):
                if str(f).endswith(suffix):
                    calls["n"] += 1
                    if calls["n"] == n:
                        raise OSError(getattr(errno, code), os.strerror(getattr(errno, code)), str(f))
                return real(obj, f, *a, **kw)
            return write

        with monkeypatch.context() as m:
            m.setattr(torch, "save", failing(torch.save))
            m.setattr(modeling_utils, "safe_save_file", failing(modeling_utils.safe_save_file))
            return run_as_main(REPO_ROOT / "recipes" / recipe, list(args), monkeypatch, capsys)
    return run


def one_error_line(done, prog, reason="No space left on device"):
    code, output = done
    assert code == 1, output[-2000:]
    assert "Traceback" not in output
    errors = [line for line in output.splitlines() if line.startswith(f"{prog}: error:")]
    assert len(errors) == 1 and "out of disk space" in errors[0] and reason in errors[0]


@pytest.mark.slow
def test_pretraining_keeps_the_last_good_checkpoint(tiny_packed_dir, tmp_path, run_failing):
    out = tmp_path / "run"
    done = run_failing(2, "optimizer.pt", "pretrain.py", *pretrain_args(
        tiny_packed_dir, out, "--max_steps", "30", "--save_steps", "10", "--eval_strategy", "no"))
    one_error_line(done, "pretrain.py")
    assert [p.name for p in complete_checkpoints(out)] == ["checkpoint-10"]
    assert (out / "checkpoint-20").is_dir() and not (out / "checkpoint-20" / CHECKPOINT_COMPLETE).exists()
    assert not (out / "model.safetensors").exists()  # no final model that looks finished


@pytest.mark.parametrize("code, reason", [("ENOSPC", "No space left on device"), ("EFBIG", "File too large")])
def test_export_leaves_no_folder_and_keeps_the_previous_one(code, reason, tiny_chat_model_dir, tmp_path, run_failing):
    """ENOSPC (disk full) or EFBIG (a file-size limit, e.g. `ulimit -f` or a FAT32 volume)."""
    out = tmp_path / "export"
    args = ["--model_name_or_path", str(tiny_chat_model_dir), "--output_dir", str(out), "--repo_id", "tester/x",
            "--dtype", "float32"]
    one_error_line(run_failing(1, ".safetensors", "export.py", *args, code=code), "export.py", reason)
    assert not out.exists() and not list(tmp_path.glob(".export*"))
    out.mkdir()
    (out / "config.json").write_text("{}")  # a previous export
    one_error_line(run_failing(1, ".safetensors", "export.py", *args, code=code), "export.py", reason)
    assert [p.name for p in out.iterdir()] == ["config.json"] and not list(tmp_path.glob(".export*"))
