"""llm_recipes/stages.py: a warm stage is a fork of the pipeline's process that behaves as `python script.py` would
(argv, sys.path, __main__, exit code, sys.exit message, traceback, atexit, output to console and log) and leaves
nothing of itself in the next stage; with another thread running it is a new interpreter instead.

The driver runs in a subprocess of its own: the test's xdist worker has threads, where a fork is refused."""

import json
import os
import re
import subprocess
import sys
import textwrap

from testkit import REPO_ROOT

from llm_recipes.stages import as_python, python_entry

SCRIPT = """
import atexit, json, os, sys
import _warm_marker  # noqa: F401  (imported by the driver before the fork; this import is then a no-op)
atexit.register(lambda: open(os.path.join(os.path.dirname(__file__), "atexit-" + sys.argv[1]), "w").write("ran"))
print(json.dumps({"argv": sys.argv, "path0": sys.path[0], "name": __name__, "pid": os.getpid(),
                  "marker_loaded_before": _warm_marker.LOADED_BY, "leak": os.environ.get("LEAK"),
                  "global": getattr(json, "_stage_global", None)}), flush=True)
os.environ["LEAK"] = sys.argv[1]  # a later stage must not see these
json._stage_global = sys.argv[1]
action = sys.argv[2]
if action == "exit3":
    sys.exit(3)
if action == "message":
    sys.exit("stage said no")
if action == "raise":
    raise RuntimeError("boom in the stage")
"""

DRIVER = """
import json, os, sys, threading, time
from pathlib import Path
sys.path.insert(1, sys.argv[1] + "/stages")
import _warm_marker
_warm_marker.LOADED_BY = os.getpid()
from llm_recipes import stages
stages.WARM_IMPORTS = ("json",)  # the mechanism, not the libraries: fast
if sys.argv[2] == "thread":
    threading.Thread(target=time.sleep, args=(30,), daemon=True).start()
work = Path(sys.argv[1])
codes = {}
for n, action in enumerate(["ok", "exit3", "message", "raise", "ok"]):
    argv = [sys.executable, str(work / "stages" / "stage.py"), str(n), action]
    codes[n] = stages.run_logged(argv, work / "logs" / f"{n}.log", warm=True)
codes["module"] = stages.run_logged([sys.executable, "-m", "stage_mod", "m", "ok"], work / "logs" / "m.log", warm=True)
print("CODES " + json.dumps(codes) + " PARENT " + str(os.getpid()))
"""


def drive(tmp_path, mode):
    """driver.py in tmp_path, the stages and the marker module in tmp_path/stages (also the working folder, so `-m` finds
    stage_mod there): a stage's sys.path[0] is its own folder, not the driver's."""
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "stage.py").write_text(SCRIPT)
    (tmp_path / "stages" / "stage_mod.py").write_text(SCRIPT)
    (tmp_path / "stages" / "_warm_marker.py").write_text("LOADED_BY = None\n")
    (tmp_path / "driver.py").write_text(textwrap.dedent(DRIVER))
    done = subprocess.run([sys.executable, str(tmp_path / "driver.py"), str(tmp_path), mode], cwd=tmp_path / "stages",
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("CODES "))
    codes, parent = json.loads(line.split(" PARENT ")[0][6:]), int(line.split(" PARENT ")[1])
    logs = {p.stem: p.read_text() for p in (tmp_path / "logs").iterdir()}
    seen = {k: json.loads(v.splitlines()[0]) for k, v in logs.items()}
    return codes, parent, logs, seen, done.stdout


def test_a_warm_stage_runs_like_a_new_interpreter_in_a_fork(tmp_path):
    codes, parent, logs, seen, console = drive(tmp_path, "fork")
    assert codes == {"0": 0, "1": 3, "2": 1, "3": 1, "4": 0, "module": 0}
    assert "stage said no" in logs["2"] and "RuntimeError: boom in the stage" in logs["3"]
    assert all(f'"argv": ["{tmp_path}/stages/stage.py", "{n}", ' in logs[str(n)] for n in range(5))
    assert "boom in the stage" in console  # the console gets what the log gets
    for key, s in seen.items():
        assert s["name"] == "__main__" and s["path0"] == str(tmp_path / "stages") and s["pid"] != parent, (key, s)
        assert s["marker_loaded_before"] == parent  # a fork: the driver's imports are there already
        assert s["leak"] is None and s["global"] is None, (key, s)  # nothing of an earlier stage
    assert seen["m"]["argv"][0].endswith("stage_mod.py")
    assert sorted(p.name for p in (tmp_path / "stages").glob("atexit-*")) == [f"atexit-{n}" for n in range(5)] + ["atexit-m"]


def test_with_another_thread_running_each_stage_is_a_new_interpreter(tmp_path):
    codes, parent, logs, seen, _ = drive(tmp_path, "thread")
    assert codes == {"0": 0, "1": 3, "2": 1, "3": 1, "4": 0, "module": 0}
    assert all(s["marker_loaded_before"] is None for s in seen.values())  # imported afresh: not a fork


def test_only_this_interpreter_running_a_script_or_module_is_warm():
    assert python_entry([sys.executable, "recipes/sft.py", "--config", "x"]) == ("path", "recipes/sft.py")
    assert python_entry([sys.executable, "-m", "data_prep", "--config", "x"]) == ("module", "data_prep")
    assert python_entry([sys.executable, "-c", "print(1)"]) is None
    assert python_entry(["/other/python", "recipes/sft.py"]) is None
    accelerate = sys.executable.replace("python", "accelerate")
    assert python_entry([accelerate, "launch", "recipes/sft.py"]) is None
    # ... but the pipeline runs `accelerate launch` as the same launch by this interpreter, which it can fork
    assert as_python([accelerate, "launch", "--num_processes", "2", "recipes/sft.py"]) == [
        sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "recipes/sft.py"]
    assert as_python([accelerate, "config"]) == [accelerate, "config"]


RANK = """
import json, os, signal, sys, time
import torch
import _warm_marker
rank = os.environ.get("RANK")
sys.stdout.write(f"A{rank}\\n")  # unbuffered as under `python -u`: A, B, C reach the log in the order written (one
sys.stderr.write(f"B{rank}\\n")  # write a line, so the two ranks' lines never mix)
sys.stdout.write(f"C{rank}\\n")
print(json.dumps({"rank": os.environ.get("RANK"), "world": os.environ.get("WORLD_SIZE"), "ppid": os.getppid(),
                  "session_leader": os.getsid(0) == os.getpid(), "sigterm_default": signal.getsignal(signal.SIGTERM)
                  == signal.SIG_DFL, "sigint_default": signal.getsignal(signal.SIGINT) is signal.default_int_handler,
                  "threads": torch.get_num_threads(), "marker_loaded_by": _warm_marker.LOADED_BY,
                  "argv": sys.argv, "path0": sys.path[0]}))
if os.environ["RANK"] == "1" and sys.argv[1] == "fail":
    sys.exit("rank 1 says no")
"""

LAUNCHER = """
import json, os, sys
from pathlib import Path
sys.path.insert(1, sys.argv[1])
import _warm_marker
_warm_marker.LOADED_BY = os.getpid()
from llm_recipes import stages
stages.WARM_IMPORTS = ("torch", "accelerate")
work = Path(sys.argv[1])
accelerate = str(Path(sys.executable).with_name("accelerate"))
for run in ("ok", "fail"):
    argv = [accelerate, "launch", "--config_file", "launch/accelerate/zero3.yaml", "--num_processes", "2", "--num_cpu_threads_per_process", "1", "--main_process_port",
            sys.argv[2], str(work / "rank.py"), run]
    code = stages.run_logged(argv, work / f"{run}.log", warm=True)
    print("CODE", run, code, "PARENT", os.getpid(), flush=True)
"""


def test_a_warm_accelerate_launch_forks_its_ranks_as_new_interpreters_would_run(tmp_path):
    """`accelerate launch` in a warm stage: each rank a fork of the launcher (the pipeline's imports there already)
    with the rank's environment, a session of its own, default signal handlers, the thread count asked for and
    unbuffered output; a rank's failure fails the launch with its message. A 2-process launch: ~15 s."""
    from testkit import free_port

    (tmp_path / "rank.py").write_text(RANK)
    (tmp_path / "_warm_marker.py").write_text("LOADED_BY = None\n")
    (tmp_path / "launcher.py").write_text(textwrap.dedent(LAUNCHER))
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}  # the launcher's torch: one per core
    done = subprocess.run([sys.executable, str(tmp_path / "launcher.py"), str(tmp_path), str(free_port())], env=env,
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    codes = dict(re.findall(r"^CODE (\w+) (\d+)", done.stdout, re.M))
    assert codes == {"ok": "0", "fail": "1"}, done.stdout[-2000:]
    launcher = {int(pid) for pid in re.findall(r"PARENT (\d+)", done.stdout)}
    for run in ("ok", "fail"):
        log = (tmp_path / f"{run}.log").read_text()
        seen = sorted((json.loads(line) for line in log.splitlines() if line.startswith('{"rank"')),
                      key=lambda s: s["rank"])
        assert [s["rank"] for s in seen] == ["0", "1"] and all(s["world"] == "2" for s in seen), log[-2000:]
        for s in seen:
            assert s["marker_loaded_by"] in launcher, s  # a fork of the pipeline's process, through the launcher
            assert s["ppid"] not in launcher, s  # ... whose child is the launcher, not the rank
            assert s["session_leader"] and s["sigterm_default"] and s["sigint_default"], s
            assert s["threads"] == 1 and s["argv"] == [str(tmp_path / "rank.py"), run], s
            assert s["path0"] == str(tmp_path), s
        for rank in ("0", "1"):
            lines = [line for line in log.splitlines() if line in (f"A{rank}", f"B{rank}", f"C{rank}")]
            assert lines == [f"A{rank}", f"B{rank}", f"C{rank}"], log[-2000:]
    assert "rank 1 says no" in (tmp_path / "fail.log").read_text()
