"""Two "machines" on loopback: two `accelerate launch` commands, one process each, joined by a static rendezvous on
127.0.0.1 exactly as two nodes would be (`--num_machines 2 --machine_rank 0|1`), ZeRO-3 over gloo on CPU. What they
train, checkpoint and resume must be what one machine with two processes trains."""

import os
import re
import subprocess
import time
from contextlib import contextmanager

import pytest
from testkit import (ACCELERATE, REPO_ROOT, TWO_PROCESSES, assert_resumed_at, assert_resumed_batches,
                     assert_same_losses_and_weights, data_order, free_port, history, kill_tree, losses,
                     newest_checkpoint_step, pretrain_args)
import warmproc

from llm_recipes.training import CHECKPOINT_COMPLETE

pytestmark = TWO_PROCESSES
ZERO3 = str(REPO_ROOT / "launch/accelerate/zero3.yaml")
COMMON = ["--max_steps", "20", "--save_steps", "5", "--save_total_limit", "4", "--logging_steps", "1",
          "--eval_strategy", "no", "--log_data_order", "true"]
TIMEOUT = 300  # per launch: a rendezvous that never completes fails the test instead of blocking it


def start(cmd: list[str], log) -> subprocess.Popen:
    # LOGLEVEL=INFO: torchrun's agent logs its rendezvous result (group_rank = machine rank, world sizes)
    return warmproc.popen(cmd, cwd=REPO_ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1", "LOGLEVEL": "INFO"},
                          stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True)


@contextmanager
def two_machines(packed_dir, out, logs, *extra):
    """Machine ranks 0 and 1 started together, as srun starts them on two nodes (launch/slurm/pretrain.sbatch): the
    ZeRO-3 config and the flags that turn it multi-node. Any launch still running on leaving is killed with its
    workers, so a failed assertion never leaves a half-joined rendezvous behind."""
    port, procs = free_port(), []
    try:
        for rank in (0, 1):
            # --deepspeed_multinode_launcher standard: without it accelerate hands a multi-machine DeepSpeed launch to
            # DeepSpeed's pdsh runner (ssh + hostfile) instead of starting this machine's processes itself
            cmd = [*ACCELERATE, "--config_file", ZERO3, "--deepspeed_multinode_launcher", "standard",
                   "--num_machines", "2", "--machine_rank", str(rank), "--num_processes", "2",
                   "--main_process_ip", "127.0.0.1", "--main_process_port", str(port), "--rdzv_backend", "static",
                   str(REPO_ROOT / "recipes/pretrain.py"), *pretrain_args(packed_dir, out, *COMMON, *extra)]
            with open(logs[rank], "w") as log:  # the launch writes to its own copy of the descriptor
                procs.append(start(cmd, log))
        yield procs
    finally:
        kill_tree(*(proc.pid for proc in procs if proc.poll() is None))
        for proc in procs:
            proc.wait()


def finish(procs, logs) -> list[str]:
    """Wait for both machines (TIMEOUT each); their logs, after asserting both exited 0."""
    for proc in procs:
        try:
            proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            pass  # reported below with the log; two_machines kills it
    texts = [p.read_text() for p in logs]
    for rank, (proc, text) in enumerate(zip(procs, texts)):
        assert proc.returncode == 0, f"machine {rank} (exit {proc.returncode}):\n{text[-4000:]}"
    return texts


def assert_topology(texts: list[str]) -> None:
    """Each launch joined as its machine rank of 2 machines, world size 2, and its one process held half of ZeRO-3."""
    for rank, text in enumerate(texts):
        agent = re.search(r"Rendezvous complete for workers.*?global_world_sizes=\S+", text, re.DOTALL)
        assert agent, (rank, text[-3000:])
        for field in (f"group_rank={rank}", "group_world_size=2", f"global_ranks=[{rank}]", "global_world_sizes=[2]"):
            assert re.search(rf"\s{re.escape(field)}$", agent.group(0), re.MULTILINE), (field, agent.group(0))
        assert re.search(rf"^\[rank {rank}\] ZeRO-3 partition: holds .* \(50\.0%\)", text, re.MULTILINE), rank
        assert f"[rank {1 - rank}] ZeRO-3 partition" not in text, "the other machine's process ran here"


def kill_both_once_exists(procs, logs, path, timeout: float = TIMEOUT) -> None:
    """SIGKILL both machines (launchers and workers) as soon as `path` exists; fails if either launch ends first."""
    deadline = time.time() + timeout
    while not path.exists():
        if any(p.poll() is not None for p in procs) or time.time() > deadline:
            tails = "\n".join(f"--- machine {rank}:\n{log.read_text()[-2500:]}" for rank, log in enumerate(logs))
            pytest.fail(f"no {path.parent.name}/{path.name} before a launch ended or {timeout} s passed:\n{tails}")
        time.sleep(0.01)
    kill_tree(*(proc.pid for proc in procs))
    for proc in procs:
        proc.wait()


@pytest.mark.slow
def test_two_machines_train_checkpoint_and_resume_like_one(tiny_packed_dir, tmp_path):
    """Killed after checkpoint 10, resumed `latest` on two machines: the same per-rank batches, losses, token count
    and final weights as an uninterrupted single-machine, two-process run."""
    baseline = tmp_path / "one_machine"
    cmd = [*ACCELERATE, "--config_file", ZERO3, "--num_processes", "2", "--main_process_port", str(free_port()),
           str(REPO_ROOT / "recipes/pretrain.py"), *pretrain_args(tiny_packed_dir, baseline, *COMMON)]
    proc = warmproc.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    run = tmp_path / "two_machines"
    logs = [tmp_path / f"machine{rank}.log" for rank in (0, 1)]
    with two_machines(tiny_packed_dir, run, logs) as procs:
        kill_both_once_exists(procs, logs, run / "checkpoint-10" / CHECKPOINT_COMPLETE)
    assert_topology([p.read_text() for p in logs])
    assert not (run / "model.safetensors").exists(), "the run finished before it was killed"
    checkpoint = newest_checkpoint_step(run)
    before = {rank: len(data_order(run, rank)) for rank in (0, 1)}
    for rank in (0, 1):  # up to the kill, each machine's process drew the batches of the same rank on one machine
        assert data_order(run, rank) == data_order(baseline, rank)[:before[rank]], rank

    logs = [tmp_path / f"machine{rank}.resumed.log" for rank in (0, 1)]
    with two_machines(tiny_packed_dir, run, logs, "--resume_from_checkpoint", "latest") as procs:
        texts = finish(procs, logs)
    assert_topology(texts)
    assert_resumed_at(texts[0], 20, checkpoint)
    for rank in (0, 1):
        assert_resumed_batches(baseline, run, before[rank], checkpoint, 20, rank)
    assert_same_losses_and_weights(baseline, run, checkpoint)  # also loads both final models with from_pretrained
    expected, got = losses(history(baseline)), losses(history(run))  # the steps before the kill too
    assert sorted(got) == sorted(expected) == list(range(1, 21))
    assert all(abs(got[s] - expected[s]) <= 1e-5 for s in expected), {s: (got[s], expected[s]) for s in expected}
