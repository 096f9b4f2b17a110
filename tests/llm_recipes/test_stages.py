"""llm_recipes/stages.py: a warm stage is a fork of the pipeline's process that behaves as `python script.py` would
(argv, sys.path, __main__, exit code, sys.exit message, traceback, atexit, output to console and log) and leaves
nothing of itself in the next stage; with another thread running it is a new interpreter instead.

The driver runs in a subprocess of its own: the test's xdist worker has threads, where a fork is refused."""

import json
import subprocess
import sys
import textwrap

from llm_recipes.stages import python_entry

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
    assert python_entry([sys.executable.replace("python", "accelerate"), "launch", "recipes/sft.py"]) is None
