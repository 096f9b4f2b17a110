"""Running a pipeline stage's command: its output on the console and in its log, and, for `python script.py` /
`python -m module` commands, optionally in a warm interpreter.

A new interpreter spends ~7 s of a 2-core machine importing transformers' Trainer, TRL, PEFT and datasets before a
recipe does any work; a demo has a dozen such stages. `run_logged(..., warm=True)` imports them once in the calling
process and starts each Python stage as a fork of it (the zygote pattern of Android and of multiprocessing's
forkserver with preload): the same command line, working folder and environment, a process of its own (killed,
exit code and output as before), nothing of one stage left in the next.
"""

from __future__ import annotations

import atexit
import importlib
import os
import runpy
import subprocess
import sys
import threading
import traceback
from pathlib import Path

WARM_IMPORTS = ("torch", "transformers.trainer", "trl", "peft", "datasets")


def python_entry(argv: list[str]) -> tuple[str, str] | None:
    """("path", script) or ("module", name) when the command is this interpreter running a script or a module."""
    if len(argv) > 1 and argv[0] == sys.executable:
        if argv[1] == "-m" and len(argv) > 2:
            return "module", argv[2]
        if argv[1].endswith(".py"):
            return "path", argv[1]
    return None


def preload(modules: tuple[str, ...] = WARM_IMPORTS) -> bool:
    """Import what the recipes import, once, in this process (~7 s of a 2-core machine's time per interpreter); False
    where a fork would not be safe: another thread is running here (a fork copies only the calling thread)."""
    if threading.active_count() > 1:
        return False
    for module in modules:
        importlib.import_module(module)
    return threading.active_count() == 1


def fork_warm(argv: list[str], entry: tuple[str, str], out_fd: int) -> int:
    """Run `python script.py args` / `python -m module args` in a fork of this process: the same interpreter, flags
    and environment, the libraries already imported. Returns the child's pid; the child never returns."""
    sys.stdout.flush(), sys.stderr.flush()  # nothing of ours buffered twice
    pid = os.fork()
    if pid:
        return pid
    try:
        os.setsid()
        os.dup2(out_fd, 1), os.dup2(out_fd, 2)
        os.close(out_fd)
    except BaseException:
        os._exit(1)  # never unwind into the caller's frames in a child
    run_entry_and_exit(argv, entry)


def run_entry_and_exit(argv: list[str], entry: tuple[str, str]) -> None:
    """In a forked child: run the script or module as `__main__` with `argv` as the interpreter would (sys.argv,
    sys.path[0], exit code, a sys.exit message, a traceback, atexit handlers), then end the process."""
    code = 1
    try:
        kind, target = entry
        sys.argv = [target, *argv[(3 if kind == "module" else 2):]]
        if kind == "path":
            sys.path[0] = str(Path(target).resolve().parent)  # as `python script.py` puts the script's folder first
            runpy.run_path(target, run_name="__main__")
        else:
            sys.path[0] = os.getcwd()
            runpy.run_module(target, run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as e:  # as the interpreter reads it: None is 0, a message is printed and is 1
        code = 0 if e.code is None else e.code if isinstance(e.code, int) else 1
        if not isinstance(e.code, (int, type(None))):
            print(e.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
    finally:  # what the interpreter does at exit, without unwinding into the caller's frames above
        threading._shutdown()
        atexit._run_exitfuncs()
        sys.stdout.flush(), sys.stderr.flush()
        os._exit(code)


def run_logged(argv: list[str], log: Path, warm: bool = False) -> int:
    """Run one command with its output on the console and in `log` (raw bytes, so progress bars survive)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    entry = python_entry(argv) if warm else None
    with open(log, "wb") as f:
        forked = entry is not None and preload()
        if forked:
            read_fd, write_fd = os.pipe()
            pid = fork_warm(argv, entry, write_fd)
            os.close(write_fd)
            wait = lambda: os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])  # noqa: E731
        else:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
            pid, read_fd, wait = proc.pid, proc.stdout.fileno(), proc.wait
        try:
            while chunk := os.read(read_fd, 65536):
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
                f.write(chunk)
            return wait()
        except KeyboardInterrupt:
            os.killpg(pid, 15)  # the whole stage (accelerate's workers too), not just its launcher
            wait()
            raise
        finally:
            if forked:
                os.close(read_fd)
