"""launch/slurm/pretrain.sbatch submitted to a stand-in Slurm (tests/fakeslurm.py: sbatch reads the script's #SBATCH
lines as Slurm does and runs the job here, srun starts one task per node, scontrol names the nodes), on CPU with the
tiny packed data: the script's own srun + accelerate + ZeRO-3 line trains, checkpoints and saves, on one node with two
processes and on two nodes with one each, and a requeued job resumes where the first one stopped."""

import json
import os
import re
import signal
import subprocess

import pytest
from fakeslurm import install, script_options
from testkit import REPO_ROOT, TWO_PROCESSES, data_order, free_port
from transformers import LlamaForCausalLM

from llm_recipes.training import CHECKPOINT_COMPLETE

pytestmark = TWO_PROCESSES
SCRIPT = "launch/slurm/pretrain.sbatch"
TIMEOUT = 600  # per job: a rendezvous that never completes fails the test instead of blocking it


@pytest.fixture
def slurm(tmp_path, monkeypatch):
    """The fake sbatch / srun / scontrol first on PATH; returns the JSONL log of sbatch calls."""
    bin_dir = tmp_path / "slurm_bin"
    calls = install(bin_dir)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return calls


def submit(tmp_path, nodes: int, gpus_per_node: int, packed_dir, out, *extra) -> str:
    """`sbatch --wait` the script from the repository root, as the README says; the job's output after asserting it
    succeeded. GPUS_PER_NODE processes per node (CPU processes here), ZeRO-3, a free rendezvous port."""
    env = {**os.environ, "GPUS_PER_NODE": str(gpus_per_node), "ACCEL": "launch/accelerate/zero3.yaml",
           "MAIN_PORT": str(free_port()), "PYTHONUNBUFFERED": "1"}
    log = tmp_path / f"job-{len(list(tmp_path.glob('job-*')))}.out"
    cmd = ["sbatch", "--wait", "--nodes", str(nodes), "--output", str(log), SCRIPT, "configs/pretrain/tiny.yaml",
           "--dataset_path", str(packed_dir), "--output_dir", str(out), "--report_to", "none",
           "--per_device_train_batch_size", "8", "--warmup_steps", "2", "--save_steps", "2", "--logging_steps", "1",
           "--eval_strategy", "no", "--log_data_order", "true", *extra]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        answer, _ = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)  # the fake srun takes its tasks' process groups with it
        proc.communicate()
        pytest.fail(f"the job did not end in {TIMEOUT} s:\n{log.read_text()[-3000:] if log.exists() else ''}")
    text = log.read_text() if log.exists() else ""
    assert proc.returncode == 0, f"sbatch: {answer}\njob output:\n{text[-4000:]}"
    assert re.fullmatch(r"Submitted batch job \d+\n", answer), answer
    return text


def assert_script_options(calls) -> None:
    """Slurm read every #SBATCH line of the script (none sits below a command, where Slurm would ignore it)."""
    record = json.loads(calls.read_text().splitlines()[-1])
    expected = {"job-name": "llm-pretrain", "ntasks-per-node": "1", "gpus-per-node": "8", "cpus-per-task": "96",
                "exclusive": "", "output": "logs/%x-%j.out"}
    assert script_options(record["script"]) == {**expected, "nodes": "2"}, record["script"]


def assert_trained(log: str, out, steps: int) -> None:
    """Two ZeRO-3 ranks, each holding half the model and drawing its own batches; a complete checkpoint and a
    consolidated model that loads."""
    for rank in (0, 1):
        assert re.search(rf"^\[rank {rank}\] ZeRO-3 partition: holds .* \(50\.0%\)", log, re.MULTILINE), (rank, log[-3000:])
    assert [len(data_order(out, rank)) for rank in (0, 1)] == [steps, steps]
    assert data_order(out, 0) != data_order(out, 1)
    assert (out / f"checkpoint-{steps}" / CHECKPOINT_COMPLETE).exists()
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == steps
    model = LlamaForCausalLM.from_pretrained(out)
    assert model.config.hidden_size == 64


@pytest.mark.slow
def test_one_node_two_processes(tiny_packed_dir, tmp_path, slurm):
    out = tmp_path / "run"
    log = submit(tmp_path, 1, 2, tiny_packed_dir, out, "--max_steps", "4")
    assert_script_options(slurm)
    assert_trained(log, out, 4)


@pytest.mark.slow
def test_two_nodes_then_a_requeued_job_resumes(tiny_packed_dir, tmp_path, slurm):
    """Two nodes of one process each: srun starts one `accelerate launch` per node, machine ranks 0 and 1, joined by
    the c10d rendezvous on the first node. Submitted again with a longer run (as a requeued job would be), the script's
    `--resume_from_checkpoint latest` continues from the first job's last checkpoint."""
    out = tmp_path / "run"
    log = submit(tmp_path, 2, 1, tiny_packed_dir, out, "--max_steps", "4")
    assert_trained(log, out, 4)
    before = len(data_order(out, 0))

    log = submit(tmp_path, 2, 1, tiny_packed_dir, out, "--max_steps", "6")
    logged = [int(m) for m in re.findall(r"^step (\d+)/6 \| loss", log, re.MULTILINE)]
    assert logged == [5, 6], logged  # the first step after checkpoint-4, not step 1 again
    assert [int(step) for step, _ in data_order(out, 0)[before:]] == [4, 5]
    assert (out / "checkpoint-6" / CHECKPOINT_COMPLETE).exists()
    LlamaForCausalLM.from_pretrained(out)
