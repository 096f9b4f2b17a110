"""tests/warmproc.py: a command forked from the zygote behaves as the same command in a new interpreter (argv,
sys.path[0], __main__, working folder, environment, exit code, sys.exit message, traceback, atexit, stdout and stderr
apart, text with universal newlines, a kill of its process group), inherits nothing from an earlier one, and runs
under a zygote that imported its libraries with the same environment. The zygote here preloads only a marker module
(the mechanism, not the libraries: about a second)."""

import os
import signal
import subprocess
import sys

import pytest

import warmproc

SCRIPT = """
import atexit, json, os, sys
import _import_marker
atexit.register(lambda: print("atexit ran", flush=True))
print(json.dumps({"argv": sys.argv, "path0": sys.path[0], "name": __name__, "cwd": os.getcwd(), "pid": os.getpid(),
                  "seen_at_import": _import_marker.SEEN, "leak": getattr(json, "_leak", None),
                  "runtime": os.environ.get("DATA_DIR")}))
print("to stderr\\rafter a carriage return", file=sys.stderr)
json._leak = "left behind"
action = sys.argv[1]
if action == "exit3":
    sys.exit(3)
if action == "message":
    sys.exit("said no")
if action == "raise":
    raise RuntimeError("boom")
if action == "sleep":
    sys.stdout.flush()
    import time
    time.sleep(60)
"""


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    """Zygotes of this test only, preloading a marker that records MARKER_ENV as it was at import time."""
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "_import_marker.py").write_text("import os, sys\nSEEN = os.environ.get('MARKER_ENV')\n"
                                                       "print('said at import', file=sys.stderr)\n")
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "script.py").write_text(SCRIPT)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "lib"))
    monkeypatch.setattr(warmproc, "PRELOAD", ("_import_marker",))
    monkeypatch.setattr(warmproc, "_zygotes", {})
    monkeypatch.setattr(warmproc, "_asked", {})
    yield tmp_path
    for zygote in warmproc._zygotes.values():
        zygote["proc"].kill()


def both(fresh, *args, env=None):
    """The same command forked warm and in a new interpreter."""
    argv = [sys.executable, str(fresh / "work" / "script.py"), *args]
    env = {**os.environ, **(env or {})}
    warm = warmproc.run(argv, cwd=fresh / "work", env=env, capture_output=True, text=True, timeout=60)
    cold = subprocess.run(argv, cwd=fresh / "work", env=env, capture_output=True, text=True, timeout=60)
    return warm, cold


def seen(done) -> dict:
    import json

    return json.loads(done.stdout.splitlines()[0])


def test_a_warm_command_is_a_fork_that_runs_like_a_new_interpreter(fresh):
    both(fresh, "ok", env={"OTHER": "1"})  # another environment's first command: a new interpreter (a one-off)...
    assert warmproc._zygotes == {}
    both(fresh, "ok")  # ... the worker's own environment gets its zygote at once: it is asked for all session
    assert len(warmproc._zygotes) == 1
    for action, code in (("ok", 0), ("exit3", 3), ("message", 1), ("raise", 1)):
        warm, cold = both(fresh, action, env={"DATA_DIR": f"d-{action}"})
        assert warm.returncode == cold.returncode == code, (action, warm.stderr)
        w, c = seen(warm), seen(cold)
        assert w["pid"] != c["pid"] and len(warmproc._zygotes) == 1  # forked: the zygote is there
        for key in ("argv", "path0", "name", "cwd", "seen_at_import", "leak", "runtime"):
            assert w[key] == c[key], (action, key, w[key], c[key])
        assert w["leak"] is None  # nothing of the earlier command
        assert warm.stdout.splitlines()[1:] == cold.stdout.splitlines()[1:] == ["atexit ran"]
        # the import's output first, as a new interpreter prints it; "\r" read as a line end, as subprocess reads it
        assert warm.stderr.split("\n")[:3] == cold.stderr.split("\n")[:3] == [
            "said at import", "to stderr", "after a carriage return"]
    assert both(fresh, "message")[0].stderr.rstrip().endswith("said no")
    assert "RuntimeError: boom" in both(fresh, "raise")[0].stderr


def test_an_import_time_variable_gets_a_zygote_of_its_own(fresh):
    for _ in range(2):
        warm, cold = both(fresh, "ok", env={"MARKER_ENV": "planted"})
        assert seen(warm)["seen_at_import"] == seen(cold)["seen_at_import"] == "planted"
    assert len(warmproc._zygotes) == 1
    for _ in range(2):
        warm, _ = both(fresh, "ok")
        assert seen(warm)["seen_at_import"] is None
    assert len(warmproc._zygotes) == 2


def test_a_killed_process_group_reports_its_signal(fresh):
    both(fresh, "ok")
    proc = warmproc.popen([sys.executable, str(fresh / "work" / "script.py"), "sleep"], cwd=fresh / "work",
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    assert isinstance(proc, warmproc.WarmPopen) and proc.poll() is None
    lines = [proc.stdout.readline() for _ in range(4)]  # the import's line, stderr's two, the JSON line (flushed)
    assert lines[0] == "said at import\n" and any('"argv"' in line for line in lines)
    assert os.getpgid(proc.pid) == proc.pid  # its own process group, as start_new_session
    os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    with pytest.raises(ProcessLookupError):
        os.kill(proc.pid, 0)


def test_another_program_or_code_runs_in_a_new_interpreter(fresh):
    done = warmproc.run([sys.executable, "-c", "print('c')"], capture_output=True, text=True)
    assert done.stdout == "c\n" and warmproc._zygotes == {}
    assert not isinstance(warmproc.popen(["true"]), warmproc.WarmPopen) and warmproc._zygotes == {}


def test_a_variable_read_into_a_config_module_is_read_again_in_the_fork(fresh, monkeypatch):
    """HF_DATASETS_CACHE's kind: read at import into a config module that every use reads again. One zygote serves
    every value; a fork whose value differs from the zygote's reloads the module, and sees what a new interpreter sees."""
    (fresh / "lib" / "_config_marker.py").write_text("import os\nCACHE = os.environ.get('MARKER_CACHE')\n")
    (fresh / "work" / "cache.py").write_text("import _config_marker\nprint(_config_marker.CACHE)\n")
    monkeypatch.setattr(warmproc, "PRELOAD", ("_import_marker", "_config_marker"))
    monkeypatch.setattr(warmproc, "RELOADED_ENV", {"MARKER_CACHE": "_config_marker"})
    argv = [sys.executable, str(fresh / "work" / "cache.py")]
    for value in ("a", "b", "c", "d"):
        env = {**os.environ, "MARKER_CACHE": value}
        warm = warmproc.run(argv, cwd=fresh / "work", env=env, capture_output=True, text=True, timeout=60)
        cold = subprocess.run(argv, cwd=fresh / "work", env=env, capture_output=True, text=True, timeout=60)
        assert warm.stdout == cold.stdout == f"{value}\n", (value, warm.stdout, warm.stderr)
    assert len(warmproc._zygotes) == 1  # the worker's own environment but for the variable: one zygote serves all
