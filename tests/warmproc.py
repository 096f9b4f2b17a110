"""The tests' Python subprocesses started warm: `popen` / `run` behave as `subprocess.Popen` / `subprocess.run` for a
`python script.py ...` or `python -m module ...` command, but the process is a fork of a zygote that imported torch,
transformers' Trainer, TRL, PEFT, datasets and datatrove once per xdist worker, not a new interpreter that spends ~7 s
of a 2-core box importing them (recipes/run_pipeline.py does the same for the demo's stages: llm_recipes/stages.py).

It is still a process of its own: its pid can be killed (alone or, with start_new_session, its whole group), its
exit code, stdout, stderr and working folder are its own, it runs the script as `__main__` with its argv and
sys.path[0], and it inherits nothing of an earlier one. What the zygote's imports printed is printed again at the
start of each child's stderr, as a new interpreter would print it.

A command runs in a new interpreter when a fork could not be like one: another program, `-c` code, interpreter flags
or Popen options beyond those below. The libraries read some variables when they are imported (HF_ENDPOINT, HF_HOME,
a planted HF_TOKEN, ...), so a zygote serves only commands whose environment equals the one it imported under, but
for RUNTIME_ENV (read when a recipe runs) and RELOADED_ENV (read into a config module, which the fork reloads under
its own value); another environment gets a zygote of its own (at most MAX_ZYGOTES per worker). The first command of
another environment runs in a new interpreter, its zygote starting with the second.
"""

from __future__ import annotations

import atexit
import importlib
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if __name__ == "__main__":  # the zygote: not tests/ first on its path, where tests/llm_recipes/ would be imported
    sys.path[0] = str(REPO_ROOT)  # as a namespace package named llm_recipes (without its noise filters)

from llm_recipes.stages import WARM_IMPORTS, fresh_std_streams, preload, python_entry, run_entry_and_exit  # noqa: E402

# the pipeline's warm imports, and datatrove for data_prep; llm_recipes first, as the recipes import it: it silences
# library messages that importing DeepSpeed would print
PRELOAD = ("llm_recipes", *WARM_IMPORTS, "datatrove.pipeline.base")
# read when a recipe runs, not when a library is imported: these may differ from the zygote's environment
RUNTIME_ENV = {"PYTHONUNBUFFERED", "DATA_DIR", "PYTEST_CURRENT_TEST"}
# read at import into a library's config module, which every use reads again: a fork whose value differs from its
# zygote's reloads that module, as a new interpreter would have computed it (pack's kill test: a cache per run)
RELOADED_ENV = {"HF_DATASETS_CACHE": "datasets.config"}


# --- the zygote (this file run as a script) ---------------------------------------------------------------------


def _child(request: dict, fds: list[int], import_output: bytes) -> None:
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        if request["new_session"]:
            os.setsid()
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        for fd in set(fds):
            if fd > 2:
                os.close(fd)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        for module in request["reload"]:
            if module in sys.modules:
                importlib.reload(sys.modules[module])
        fresh_std_streams(bool(request["env"].get("PYTHONUNBUFFERED")))
        os.write(2, import_output)
    except BaseException:
        os._exit(1)
    run_entry_and_exit(request["argv"], tuple(request["entry"]))


def serve(path: str, modules: list[str]) -> None:
    """Import `modules`, then fork one child per request on the unix socket at `path` and report its exit status."""
    parent = os.getppid()
    capture = tempfile.TemporaryFile()
    saved = os.dup(1), os.dup(2)
    os.dup2(capture.fileno(), 1), os.dup2(capture.fileno(), 2)
    safe = preload(tuple(modules))
    sys.stdout.flush(), sys.stderr.flush()
    os.dup2(saved[0], 1), os.dup2(saved[1], 2)
    capture.seek(0)
    import_output = capture.read()
    if not safe:
        raise SystemExit("warmproc: a preloaded library started a thread; a fork would not be safe")

    server = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    server.bind(path + ".tmp")
    server.listen(64)
    os.rename(path + ".tmp", path)  # the client waits for the name: it exists only once we listen
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    selector = selectors.DefaultSelector()
    selector.register(server, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    waiting: dict[int, socket.socket] = {}
    while os.getppid() == parent:  # the worker is gone: so are we
        for key, _ in selector.select(timeout=2):
            if key.fileobj is server:
                conn, _ = server.accept()
                message, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
                pid = os.fork()
                if pid == 0:
                    server.close(), conn.close(), os.close(wake_r), os.close(wake_w)
                    _child(json.loads(message), fds, import_output)
                for fd in fds:
                    os.close(fd)
                conn.send(str(pid).encode())
                waiting[pid] = conn
            else:
                os.read(wake_r, 4096)
        while waiting:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            conn = waiting.pop(pid, None)
            if conn is not None:
                try:
                    conn.send(str(os.waitstatus_to_exitcode(status)).encode())
                except OSError:
                    pass  # the test that asked is gone
                conn.close()


# --- the client (in the test's process) ---------------------------------------------------------------------------

MAX_ZYGOTES = 3  # per worker, each ~1 GB resident: the least recently used one goes
_zygotes: dict[frozenset, dict] = {}  # the environment a zygote imported its libraries under -> {proc, path, used}
_asked: dict[frozenset, int] = {}  # how often each environment was asked for: a zygote from the second time on


def _import_env(env: dict) -> frozenset:
    return frozenset((k, v) for k, v in env.items() if k not in RUNTIME_ENV and k not in RELOADED_ENV)


def _zygote_for(env: dict) -> dict | None:
    """A zygote (its socket, process and RELOADED_ENV values) that imported the libraries under `env` (less
    RUNTIME_ENV and RELOADED_ENV), or None for a new interpreter: a command with planted tokens or another HF_HOME gets
    a zygote of its own, as a new interpreter would see them."""
    key = _import_env(env)
    zygote = _zygotes.get(key)
    if zygote is not None:
        if zygote["proc"].poll() is not None:
            return None
        zygote["used"] = time.monotonic()
        return zygote
    # Starting a zygote costs what one new interpreter costs (the imports) and pays off only when the environment comes
    # back: a one-off (a test's own HF_ENDPOINT) runs in a new interpreter, which may import far less (push.py).
    _asked[key] = _asked.get(key, 0) + 1
    if _asked[key] < 2 and key != _import_env(os.environ):  # the worker's own environment: asked for all session
        return None
    if len(_zygotes) >= MAX_ZYGOTES:
        oldest = min(_zygotes, key=lambda k: _zygotes[k]["used"])
        _zygotes.pop(oldest)["proc"].kill()
    path = os.path.join(tempfile.mkdtemp(prefix="warmproc-"), "zygote.sock")
    with open(Path(path).parent / "zygote.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), path, ",".join(PRELOAD)], cwd=REPO_ROOT,
                                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    atexit.register(proc.kill)
    deadline = time.time() + 300
    while not os.path.exists(path):
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            return None  # a new interpreter instead; the next command tries again
        time.sleep(0.05)
    _zygotes[key] = {"proc": proc, "path": path, "used": time.monotonic(),
                     "reloaded": {var: env.get(var) for var in RELOADED_ENV}}
    return _zygotes[key]


def _entry(args: list[str]) -> tuple[str, str] | None:
    return python_entry([str(a) for a in args])


class WarmPopen:
    """A `subprocess.Popen` for a process forked by the zygote (the subset of its API the tests use)."""

    def __init__(self, args, entry, path, cwd, env, stdin, stdout, stderr, text, start_new_session, reload=()):
        self.args, self.returncode, self._text = args, None, text
        theirs = []

        def fd_for(spec, default: int, readable: bool):
            if spec is None:
                return default, None
            if spec == subprocess.DEVNULL:
                fd = os.open(os.devnull, os.O_RDONLY if readable else os.O_WRONLY)
                theirs.append(fd)
                return fd, None
            if spec == subprocess.PIPE:
                r, w = os.pipe()
                theirs.append(r if readable else w)
                return (r, w) if readable else (w, r)
            return (spec if isinstance(spec, int) else spec.fileno()), None

        in_fd, in_mine = fd_for(stdin, 0, True)
        out_fd, out_mine = fd_for(stdout, 1, False)
        err_fd, err_mine = (out_fd, None) if stderr == subprocess.STDOUT else fd_for(stderr, 2, False)
        mode = "" if text else "b"
        self.stdin = open(in_mine, "w" + mode) if in_mine is not None else None
        self.stdout = open(out_mine, "r" + mode) if out_mine is not None else None
        self.stderr = open(err_mine, "r" + mode) if err_mine is not None else None
        request = {"argv": [str(a) for a in args], "entry": list(entry), "cwd": str(cwd or os.getcwd()), "env": env,
                   "new_session": bool(start_new_session), "reload": list(reload)}
        self._conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._conn.connect(path)
        socket.send_fds(self._conn, [json.dumps(request).encode()], [in_fd, out_fd, err_fd])
        for fd in theirs:
            os.close(fd)
        self.pid = int(self._conn.recv(64))

    def _status(self, timeout: float | None) -> int | None:
        if self.returncode is None:
            self._conn.settimeout(timeout)
            try:
                reply = self._conn.recv(64)
            except (TimeoutError, BlockingIOError):
                return None
            if not reply:
                raise RuntimeError(f"warmproc: the zygote ended before reporting on {self.args}")
            self.returncode = int(reply)
            self._conn.close()
        return self.returncode

    def poll(self) -> int | None:
        return self._status(0)

    def wait(self, timeout: float | None = None) -> int:
        code = self._status(timeout)
        if code is None:
            raise subprocess.TimeoutExpired(self.args, timeout)
        return code

    def communicate(self, input=None, timeout: float | None = None):
        if self.stdin:
            if input:
                self.stdin.write(input)
            self.stdin.close()
        deadline = None if timeout is None else time.time() + timeout
        chunks = {}
        selector = selectors.DefaultSelector()
        for stream in (self.stdout, self.stderr):
            if stream is not None:
                selector.register(stream.fileno(), selectors.EVENT_READ, stream)
                chunks[stream] = []
        while selector.get_map():
            left = None if deadline is None else deadline - time.time()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(self.args, timeout)
            for key, _ in selector.select(left):
                data = os.read(key.fd, 65536)
                if data:
                    chunks[key.data].append(data)
                else:
                    selector.unregister(key.fd)
        self.wait(None if deadline is None else max(deadline - time.time(), 0.01))
        out = []
        for stream in (self.stdout, self.stderr):
            if stream is None:
                out.append(None)
                continue
            data = b"".join(chunks[stream])
            # as subprocess does in text mode: universal newlines (a progress bar's "\r" ends a line)
            out.append(data.decode().replace("\r\n", "\n").replace("\r", "\n") if self._text else data)
            stream.close()
        return tuple(out)

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for stream in (self.stdin, self.stdout, self.stderr):
            if stream:
                stream.close()
        self.wait()


def popen(args, cwd=None, env=None, stdin=None, stdout=None, stderr=None, text=False, start_new_session=False,
          **kwargs):
    """subprocess.Popen(args, ...), forked warm where the command and its environment allow it."""
    env = dict(os.environ if env is None else env)
    entry = _entry(args)
    zygote = _zygote_for(env) if entry and not kwargs else None
    if zygote is None:
        return subprocess.Popen(args, cwd=cwd, env=env, stdin=stdin, stdout=stdout, stderr=stderr, text=text,
                                start_new_session=start_new_session, **kwargs)
    reload = sorted({module for var, module in RELOADED_ENV.items() if env.get(var) != zygote["reloaded"][var]})
    return WarmPopen(args, entry, zygote["path"], cwd, env, stdin, stdout, stderr, text, start_new_session, reload)


def run(args, cwd=None, env=None, capture_output=False, text=False, timeout=None, check=False, input=None,
        stdout=None, stderr=None) -> subprocess.CompletedProcess:
    """subprocess.run(args, ...), forked warm where the command and its environment allow it."""
    if capture_output:
        stdout = stderr = subprocess.PIPE
    proc = popen(args, cwd=cwd, env=env, stdin=subprocess.PIPE if input is not None else None, stdout=stdout,
                 stderr=stderr, text=text)
    try:
        out, err = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise
    done = subprocess.CompletedProcess(args, proc.returncode, out, err)
    if check:
        done.check_returncode()
    return done


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2].split(","))
