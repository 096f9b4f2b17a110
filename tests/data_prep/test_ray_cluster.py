"""data_prep and then pack on a real two-node Ray cluster (a head and a worker started by `ray start` on this machine, 1
CPU each): the same bytes (and report) as the local executor, with the work spread over both nodes. One cluster for
both stages, as a user would run them: starting one costs ~16 s."""

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from dp_helpers import TINY, split_hashes
from testkit import TWO_PROCESSES, free_port
import warmproc

pytestmark = TWO_PROCESSES
TIMEOUT = 300  # per command: a cluster that never comes up or a stage that never ends fails instead of blocking

# Run inside the cluster by the probes below: the alive nodes, and the node of every datatrove task actor.
PROBE = """
import json, sys, time
import ray
import ray._private.state as state  # the GCS's actor table: dead actors included, no dashboard needed
ray.init(address=sys.argv[1], log_to_driver=False)
deadline = time.time() + 60
while len(alive := [n["NodeID"] for n in ray.nodes() if n["Alive"]]) < int(sys.argv[2]) and time.time() < deadline:
    time.sleep(0.5)
actors = [a["Address"]["NodeID"] for a in state.actors().values() if a["ActorClassName"] == "RankWorker"]
print(json.dumps({"alive": alive, "task_nodes": actors}))
"""


def wait_for_line(proc: subprocess.Popen, log: Path, text: str) -> None:
    deadline = time.time() + TIMEOUT
    while text not in log.read_text():
        assert proc.poll() is None, f"`ray start` exited {proc.returncode}:\n{log.read_text()[-3000:]}"
        assert time.time() < deadline, f"no '{text}' from `ray start` in {TIMEOUT} s:\n{log.read_text()[-3000:]}"
        time.sleep(0.2)


def stop(proc: subprocess.Popen) -> None:
    """Stop one node the way `ray stop` would, but only this one: SIGTERM to its `ray start --block`, which shuts its
    processes down; whatever of its process tree is left after a minute is killed. (`ray stop` itself would take every
    Ray on the machine, other test runs' included.)"""
    import psutil  # a dependency of ray and deepspeed

    try:
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        tree = []
    proc.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(tree, timeout=60)
    for p in alive:  # task workers leave the node's process group, so they are killed by pid
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    proc.wait()


@pytest.fixture
def ray_cluster(tmp_path):
    """A head node and a worker node, 1 CPU each, on loopback; yields (address, environment for its clients).
    Token authentication with a token made for this test (Ray 2.60 otherwise picks up ~/.ray/auth_token on one side
    only); a private temp dir, so no `ray.init()` elsewhere on the machine finds this cluster. Both nodes are stopped on
    teardown however the test ends."""
    pytest.importorskip("ray")
    port = free_port()
    temp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: Ray's socket paths must stay under 108 bytes
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
           "RAY_USAGE_STATS_ENABLED": "0", "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0", "PYTHONUNBUFFERED": "1"}
    ray_cli = [sys.executable, "-m", "ray.scripts.scripts", "start", "--block", "--num-cpus", "1",
               "--node-ip-address", "127.0.0.1", "--disable-usage-stats"]
    nodes = []
    try:
        for name, extra in (("head", ["--head", "--port", str(port), "--temp-dir", str(temp), "--include-dashboard",
                                      "false", "--ray-client-server-port", str(free_port())]),
                            ("worker", ["--address", f"127.0.0.1:{port}"])):
            log = tmp_path / f"ray_{name}.log"
            with open(log, "w") as out:
                nodes.append(subprocess.Popen([*ray_cli, *extra], env=env, stdout=out, stderr=subprocess.STDOUT,
                                              start_new_session=True))
            wait_for_line(nodes[-1], log, "Ray runtime started")
        yield f"127.0.0.1:{port}", env
    finally:
        for proc in reversed(nodes):
            stop(proc)
        shutil.rmtree(temp, ignore_errors=True)


def probe(address: str, env: dict, nodes: int) -> dict:
    done = warmproc.run([sys.executable, "-c", PROBE, address, str(nodes)], env=env, capture_output=True, text=True,
                        timeout=TIMEOUT, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.slow
def test_two_node_ray_cluster_gives_byte_identical_output_and_report(repo_root, tmp_path, tiny_run, ray_cluster,
                                                                     tiny_tokenizer_dir):
    address, env = ray_cluster
    nodes = probe(address, env, 2)["alive"]
    assert len(nodes) == 2, nodes

    out = tmp_path / "ray"
    done = warmproc.run([sys.executable, "-m", "data_prep", "--config", str(repo_root / TINY), "--output_dir", str(out),
                         "--executor", "ray", "--ray_address", address], cwd=repo_root, env=env,
                        capture_output=True, text=True, timeout=TIMEOUT, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    # every stage's tasks ran as datatrove RankWorker actors of this cluster, on both of its nodes
    task_nodes = probe(address, env, 2)["task_nodes"]
    assert len(task_nodes) >= 6 and set(task_nodes) == set(nodes), task_nodes  # 2 + 1 + 1 + 2 tasks in 4 stages

    local = tiny_run
    assert split_hashes(out) == split_hashes(local) and len(split_hashes(local)) >= 6
    assert json.loads((out / "report.json").read_text()) == json.loads((local / "report.json").read_text())
    assert (out / "report.md").read_text() == (local / "report.md").read_text()
    assert "executor: ray" in (out / "resolved_config.yaml").read_text()
    assert f"ray_address: {address}" in (out / "resolved_config.yaml").read_text()

    # make pack of that output on the same cluster: its 2 tasks run as actors of the cluster (on whichever node Ray
    # picks: a tiny task may end before the next is placed) and write the local executor's bytes
    import recipes.pack

    pack = ["--train_sources", str(local / "train"), "--validation_sources", str(local / "validation"),
            "--tokenizer_name_or_path", str(tiny_tokenizer_dir), "--block_size", "64", "--tasks", "2"]
    done = warmproc.run([sys.executable, str(repo_root / "recipes" / "pack.py"), *pack, "--output_dir",
                         str(tmp_path / "packed-ray"), "--executor", "ray", "--ray_address", address], cwd=repo_root,
                        env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    pack_nodes = probe(address, env, 2)["task_nodes"][len(task_nodes):]
    assert len(pack_nodes) == 2 and set(pack_nodes) <= set(nodes), pack_nodes
    recipes.pack.main([*pack, "--output_dir", str(tmp_path / "packed-local"), "--executor", "local"])
    packed = [{p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*"))
               if p.is_file() and p.name not in ("run_info.json", "resolved_config.yaml")}
              for d in (tmp_path / "packed-ray", tmp_path / "packed-local")]
    assert packed[0] == packed[1] and len(packed[0]) == 2 + 4  # index, stats, 2 train + 2 validation shards
