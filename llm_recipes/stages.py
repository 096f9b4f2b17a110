"""Running a pipeline stage's command: its output on the console and in its log, and, for `python script.py` /
`python -m module` commands, optionally in a warm interpreter.

A new interpreter spends ~7 s of a 2-core machine importing transformers' Trainer, TRL, PEFT and datasets before a
recipe does any work; a demo has a dozen such stages. `run_logged(..., warm=True)` imports them once in the calling
process and starts each Python stage as a fork of it (the zygote pattern of Android and of multiprocessing's
forkserver with preload): the same command line, working folder and environment, a process of its own (killed,
exit code and output as before), nothing of one stage left in the next.

An `accelerate launch` run warm starts its ranks warm too (`fork_ranks`): torchrun's agent would start each rank as
`python -u script.py`, a new interpreter that imports all of it again (~8 s per rank on this box); the launcher forks
itself instead, with the rank's environment, its own session and torchrun's stdout/stderr. CPU-only torch builds
only: a CUDA runtime does not survive a fork, and on a GPU machine the imports are a small share of a launch.
"""

from __future__ import annotations

import atexit
import importlib
import io
import os
import runpy
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

WARM_IMPORTS = ("torch", "transformers.trainer", "trl", "peft", "datasets")


LAUNCH_MODULE = "accelerate.commands.launch"


def as_python(argv: list[str]) -> list[str]:
    """`<venv>/bin/accelerate launch ...` as the same launch by this interpreter: `python -m accelerate.commands.launch
    ...` (what the console script runs), so a pipeline can start it warm."""
    if len(argv) > 1 and argv[0] == str(Path(sys.executable).with_name("accelerate")) and argv[1] == "launch":
        return [sys.executable, "-m", LAUNCH_MODULE, *argv[2:]]
    return argv


def python_entry(argv: list[str]) -> tuple[str, str] | None:
    """("path", script) or ("module", name) when the command is this interpreter running a script or a module."""
    if len(argv) > 1 and argv[0] == sys.executable:
        if argv[1] == "-m" and len(argv) > 2:
            return "module", argv[2]
        if argv[1].endswith(".py"):
            return "path", argv[1]
    return None


def preload(modules: tuple[str, ...] | None = None) -> bool:
    """Import `modules` (default WARM_IMPORTS: what the recipes import), once, in this process (~7 s of a 2-core
    machine's time per interpreter); False where a fork would not be safe: another thread is running here (a fork
    copies only the calling thread)."""
    if threading.active_count() > 1:
        return False
    for module in WARM_IMPORTS if modules is None else modules:
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


def fresh_std_streams(unbuffered: bool) -> None:
    """sys.stdin/stdout/stderr over fds 0-2 as a new interpreter opens them (`-u` / PYTHONUNBUFFERED: no buffer under
    the text layer, each write reaches the fd). A library that kept the old stream at import (a logging handler)
    writes through it, now flushed at each line end."""
    for old in (sys.stdout, sys.stderr):
        try:
            old.reconfigure(line_buffering=True)
        except (AttributeError, ValueError):
            pass
    for fd, name, mode in ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w")):
        raw = io.FileIO(fd, mode, closefd=False)
        if mode == "r":
            binary = io.BufferedReader(raw)
        else:
            binary = raw if unbuffered else io.BufferedWriter(raw)
        tty = os.isatty(fd)
        stream = io.TextIOWrapper(binary, encoding="utf-8", errors="backslashreplace" if fd == 2 else "strict",
                                  line_buffering=tty or fd == 2, write_through=unbuffered and fd != 0)
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)


class ForkedRank:
    """What torchrun's agent uses of the `subprocess.Popen` of a rank (pid, returncode, poll, wait, signals), for a
    rank forked from the launcher."""

    def __init__(self, args: tuple, pid: int):
        self.args, self.pid, self.returncode = args, pid, None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(self.args, timeout)
            time.sleep(0.01)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)


def fork_ranks() -> None:
    """In a warm `accelerate launch`: torchrun's agent starts each `python -u script.py` rank as a fork of this
    launcher (its libraries imported), with the rank's environment, a session of its own and the agent's stdout /
    stderr, as the new interpreter would have them; any other command, or a CUDA build of torch, as before."""
    import torch
    from torch.distributed.elastic.multiprocessing.subprocess_handler import subprocess_handler

    if torch.version.cuda or torch.version.hip:
        return
    cold = subprocess_handler.SubprocessHandler._popen

    def popen(handler, args: tuple, env: dict):
        if not (len(args) > 2 and args[0] == sys.executable and args[1] == "-u" and args[2].endswith(".py")):
            return cold(handler, args, env)
        sys.stdout.flush(), sys.stderr.flush()
        pid = os.fork()
        if pid:
            return ForkedRank(args, pid)
        try:
            os.setsid()  # as the agent's Popen(start_new_session=True)
            for fd, stream in ((1, handler._stdout), (2, handler._stderr)):
                if stream is not None:
                    os.dup2(stream.fileno(), fd)
            for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):  # the agent's handlers are not the rank's
                signal.signal(sig, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            os.environ.clear()
            os.environ.update(env)
            fresh_std_streams(unbuffered=True)
            if env.get("OMP_NUM_THREADS", "").isdigit():  # read when torch loads: the launcher's value is in place
                torch.set_num_threads(int(env["OMP_NUM_THREADS"]))
        except BaseException:
            os._exit(1)
        run_entry_and_exit([sys.executable, *args[2:]], ("path", args[2]))

    subprocess_handler.SubprocessHandler._popen = popen


def run_entry_and_exit(argv: list[str], entry: tuple[str, str]) -> None:
    """In a forked child: run the script or module as `__main__` with `argv` as the interpreter would (sys.argv,
    sys.path[0], exit code, a sys.exit message, a traceback, atexit handlers), then end the process. A warm
    `accelerate launch` forks its ranks as well (`fork_ranks`)."""
    code = 1
    try:
        kind, target = entry
        if entry == ("module", LAUNCH_MODULE):
            fork_ranks()
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
    if warm:
        argv = as_python(argv)
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
