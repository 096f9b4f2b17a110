"""data_prep killed mid-run (the whole process group, at seeded points and during the publish; on Ray once a task has
completed) and rerun: the same bytes as an uninterrupted run, and a killed run never leaves an output folder that
looks complete."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
from dp_helpers import TINY, split_hashes
from testkit import TWO_PROCESSES
import warmproc


def start(repo_root, out, *extra):
    return warmproc.popen([sys.executable, "-m", "data_prep", "--config", str(repo_root / TINY), "--output_dir",
                           str(out), *extra], cwd=repo_root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True, start_new_session=True)  # its own process group: the kill reaches the workers


@pytest.mark.slow
def test_killed_and_rerun_gives_the_uninterrupted_bytes(repo_root, tmp_path, tiny_run):
    seconds = sum(json.loads((tiny_run / "timing.json").read_text())["seconds"].values())
    rng, kills = random.Random(7), 0
    for i, when in enumerate([rng.uniform(0.1, 0.9), "publish"]):
        out = tmp_path / f"killed{i}"
        proc = start(repo_root, out)
        if when == "publish":  # its staging folder exists: the splits are being copied in
            while proc.poll() is None and not list(tmp_path.glob(f".{out.name}.*.tmp")):
                time.sleep(0.005)
        else:
            time.sleep(when * seconds)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            kills += 1
            assert not out.exists() or split_hashes(out) == split_hashes(tiny_run), f"partial {out.name} after a kill"
        proc = start(repo_root, out)
        assert proc.wait(timeout=600) == 0, proc.stderr.read()[-2000:]
        assert split_hashes(out) == split_hashes(tiny_run), f"rerun after a kill at {when} differs"
        assert json.loads((out / "report.json").read_text()) == json.loads((tiny_run / "report.json").read_text())
    assert kills >= 1, "every run finished before its kill point"


@pytest.mark.slow
@TWO_PROCESSES
def test_killed_on_ray_and_rerun_gives_the_uninterrupted_bytes(repo_root, tmp_path, tiny_run):
    """Killed once a Ray task has completed (its completion marker is in the work folder), then rerun on Ray: the
    rerun skips nothing it should not and gives the bytes of the uninterrupted local run."""
    pytest.importorskip("ray")
    out = tmp_path / "killed"
    proc = start(repo_root, out, "--executor", "ray")
    work = tmp_path / "killed_work"
    while proc.poll() is None and not list(work.glob("**/completions/*")):
        time.sleep(0.01)
    assert proc.poll() is None, "the Ray run ended before a task completed: " + proc.stderr.read()[-2000:]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists(), "a Ray run killed mid-way left an output folder"
    proc = start(repo_root, out, "--executor", "ray")
    assert proc.wait(timeout=900) == 0, proc.stderr.read()[-2000:]
    assert split_hashes(out) == split_hashes(tiny_run)
    assert json.loads((out / "report.json").read_text()) == json.loads((tiny_run / "report.json").read_text())
