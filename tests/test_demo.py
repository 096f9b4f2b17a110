"""`make demo` itself, the integration test: every stage runs into one run folder, the report fills every section from
that folder, DPO learns a preference that holds out of sample, the chat model ends its answers in both languages, and
a second `make demo` skips every stage."""

import json
import os
import shutil
import subprocess

import pytest

import recipes.run_pipeline
from testkit import DATA_DIR

RUN = "_ci_demo"  # a run folder of its own: the test never touches a user's outputs/tiny


def make_demo(repo_root):
    env = {**os.environ, "DATA_DIR": str(DATA_DIR)}
    for var in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS"):  # `make test` above us must not leak its flags into this make
        env.pop(var, None)
    done = subprocess.run(["make", "demo", f"RUN={RUN}"], cwd=repo_root, env=env, capture_output=True, text=True,
                          timeout=3600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]
    return done.stdout


@pytest.mark.slow
def test_make_demo_runs_every_stage_reports_them_and_skips_them_the_second_time(repo_root, monkeypatch):
    run_dir = repo_root / "outputs" / RUN
    shutil.rmtree(run_dir, ignore_errors=True)
    try:
        make_demo(repo_root)
        stages = json.loads((run_dir / "pipeline.json").read_text())["stages"]
        assert [s["status"] for s in stages] == ["ran"] * len(stages)
        for name in ("data", "tokenizer", "packed", "pretrain", "sft-lora", "sft", "pairs", "dpo", "eval", "export",
                     "classify", "report"):
            assert (run_dir / name).is_dir(), name
        # pretraining ran as 2 ZeRO-3 processes
        assert "ZeRO-3 partition: holds" in (run_dir / "logs" / "pretrain.log").read_text()

        report = (run_dir / "report" / "report.md").read_text()
        assert "not in this run" not in report, report[:3000]
        assert list((run_dir / "report").glob("*.png"))

        # DPO learns a preference that holds on pairs it never trained on: on-policy pairs (the reference answer over
        # the SFT model's own), at least 50 held out, reward accuracy above chance, margin gain interval above 0 ...
        held_out = json.loads((run_dir / "dpo" / "dpo_metrics.json").read_text())["held_out"]
        assert held_out["pairs"] >= 50 and held_out["reward_accuracy"] > 0.55, held_out
        assert held_out["logp_margin_gain"] - held_out["logp_margin_gain_ci95"] > 0, held_out
        # ... and the DPO model still ends its answers in both languages (at least 12 of the 16 prompts each)
        generation = json.loads((run_dir / "eval" / "eval_results.json").read_text())["generation"]
        for language in ("en", "zh"):
            assert generation["per_language"][language]["stopped_share"] >= 0.75, generation

        # the second `make demo`, minus make and the interpreter start: the pipeline itself, in this process (well
        # under a second), finds every stage unchanged
        monkeypatch.chdir(repo_root)
        monkeypatch.setenv("DATA_DIR", str(DATA_DIR))
        again = recipes.run_pipeline.main(["--config", "configs/pipeline/tiny.yaml", "--run_dir", f"outputs/{RUN}"])
        assert [s["status"] for s in again] == ["skipped"] * len(stages), again
        assert json.loads((run_dir / "pipeline.json").read_text())["stages"] == again
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
