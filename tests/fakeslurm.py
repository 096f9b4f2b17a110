"""Slurm's `sbatch`, `srun` and `scontrol` on one machine, for tests: `install(bin_dir)` writes them into a folder
the test puts first on PATH. CI machines have no Slurm (it needs root and apt), so this stands in for it.

sbatch reads a batch script the way Slurm 22.05 does (checked against the real one): the first line must be `#!`;
`#SBATCH` options count only before the first command line (blank and comment lines may come between); an unknown
option name (unambiguous prefixes are accepted, as getopt does) or a malformed value is refused with sbatch's message
and exit code; options on sbatch's own command line override the script's. Every call is appended to a JSONL file.
With `run=True` the job then runs at once, before sbatch returns: the script, from a spooled copy and in the submit
directory, with the SLURM_* variables of an allocation of --nodes nodes that all live on this machine ("localhost",
or 127.0.0.1, 127.0.0.2, ... for several: loopback addresses all), its output written to --output (whose folder
must exist: Slurm would silently drop the output). `sbatch --wait` returns the job's exit code, as in Slurm.
srun starts its command once per task (SLURM_PROCID, SLURM_NODEID, SLURM_LOCALID) and, with --kill-on-bad-exit,
kills the other tasks when one fails; as the nodes share one machine, a later node's tasks start once the first node's
task listens on a port (its rendezvous). scontrol answers `show hostnames`.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

# sbatch's long options (Slurm 22.05 `sbatch --help`, plus a few it documents only in its man page). Value: how its
# argument is checked, None = takes no argument, "optional" = only as --opt=value.
COUNT = r"\d+"
LONG = {
    "account": "", "acctg-freq": "", "array": r"\d+(-\d+)?(:\d+)?(,\d+(-\d+)?(:\d+)?)*(%\d+)?", "batch": "",
    "bb": "", "bbf": "", "begin": "", "chdir": "", "cluster-constraint": "", "clusters": "", "comment": "",
    "constraint": "", "container": "", "contiguous": None, "core-spec": COUNT, "cores-per-socket": COUNT,
    "cpu-freq": "", "cpus-per-gpu": COUNT, "cpus-per-task": COUNT, "deadline": "", "delay-boot": "",
    "dependency": "", "distribution": "", "error": "", "exclude": "", "exclusive": "optional", "export": "",
    "export-file": "", "extra-node-info": "", "get-user-env": "optional", "gid": "", "gpu-bind": "",
    "gpu-freq": "", "gpus": r"([\w.-]+:)?\d+", "gpus-per-node": r"([\w.-]+:)?\d+", "gpus-per-socket": r"([\w.-]+:)?\d+",
    "gpus-per-task": r"([\w.-]+:)?\d+", "gres": "", "gres-flags": "", "help": None, "hint": "", "hold": None,
    "ignore-pbs": None, "input": "", "job-name": "", "kill-on-invalid-dep": "yes|no", "licenses": "",
    "mail-type": "", "mail-user": "", "mcs-label": "", "mem": r"\d+[KMGT]?", "mem-bind": "",
    "mem-per-cpu": r"\d+[KMGT]?", "mem-per-gpu": r"\d+[KMGT]?", "mincpus": COUNT, "network": "", "nice": "optional",
    "no-kill": "optional", "no-requeue": None, "nodefile": "", "nodelist": "", "nodes": r"\d+(-\d+)?",
    "ntasks": COUNT, "ntasks-per-core": COUNT, "ntasks-per-gpu": COUNT, "ntasks-per-node": COUNT,
    "ntasks-per-socket": COUNT, "open-mode": "append|truncate", "output": "", "overcommit": None,
    "oversubscribe": None, "parsable": None, "partition": "", "power": "", "priority": "", "profile": "",
    "propagate": "optional", "qos": "", "quiet": None, "reboot": None, "requeue": None, "reservation": "",
    "signal": "", "sockets-per-node": COUNT, "spread-job": None, "switches": "", "test-only": None,
    "thread-spec": COUNT, "threads-per-core": COUNT, "time": r"(\d+-)?\d+(:\d+){0,2}|UNLIMITED|INFINITE",
    "time-min": r"(\d+-)?\d+(:\d+){0,2}", "tmp": r"\d+[KMGT]?", "tres-per-task": "", "uid": "", "usage": None,
    "use-min-nodes": None, "verbose": None, "version": None, "wait": None, "wait-all-nodes": "0|1", "wckey": "",
    "wrap": "",
}
SHORT = {"a": "array", "A": "account", "b": "begin", "c": "cpus-per-task", "C": "constraint", "d": "dependency",
         "D": "chdir", "e": "error", "F": "nodefile", "G": "gpus", "H": "hold", "i": "input", "J": "job-name",
         "k": "no-kill", "L": "licenses", "m": "distribution", "M": "clusters", "n": "ntasks", "N": "nodes",
         "o": "output", "O": "overcommit", "p": "partition", "q": "qos", "Q": "quiet", "s": "oversubscribe",
         "S": "core-spec", "t": "time", "v": "verbose", "W": "wait", "w": "nodelist", "x": "exclude"}
EXCLUSIVE = ("", "user", "mcs", "topo")


class SbatchError(Exception):
    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def long_name(given: str, raw: str) -> str:
    """getopt_long: an exact name, or the one option the given prefix starts."""
    if given in LONG:
        return given
    matches = [name for name in LONG if name.startswith(given)]
    if len(matches) != 1:
        raise SbatchError(f"sbatch: {'unrecognized' if not matches else 'ambiguous'} option '{raw}'", 255)
    return matches[0]


def check_value(name: str, value: str | None) -> str:
    rule = LONG[name]
    if name == "exclusive":
        if value not in (None, *EXCLUSIVE):
            raise SbatchError("sbatch: error: Invalid --exclusive specification", 255)
        return value or ""
    if rule is None:
        if value is not None:
            raise SbatchError(f"sbatch: option '--{name}' doesn't allow an argument", 255)
        return ""
    if value is None:
        if rule == "optional":
            return ""
        raise SbatchError(f"sbatch: option '--{name}' requires an argument", 255)
    if name == "nodes" and not re.fullmatch(rule, value):
        raise SbatchError(f'sbatch: error: "{value}" is not a valid node count', 255)
    if rule and rule != "optional" and not re.fullmatch(rule, value):
        raise SbatchError(f'sbatch: error: Invalid value "{value}" for --{name}.')
    return value


def parse_options(words: list[str], stop_at_positional: bool) -> tuple[dict[str, str], list[str]]:
    """Options in the order given (a later one wins) and what follows them."""
    options, i = {}, 0
    while i < len(words):
        word = words[i]
        if word.startswith("--") and len(word) > 2:
            given, eq, value = word[2:].partition("=")
            name = long_name(given, word)
            if not eq:
                value = None
                if LONG[name] not in (None, "optional"):
                    if i + 1 >= len(words):
                        raise SbatchError(f"sbatch: option '--{name}' requires an argument", 255)
                    i, value = i + 1, words[i + 1]
            options[name] = check_value(name, value)
        elif word.startswith("-") and len(word) > 1 and word != "-":
            name = SHORT.get(word[1])
            if name is None:
                raise SbatchError(f"sbatch: invalid option -- '{word[1]}'", 255)
            value = word[2:] or None
            if value is None and LONG[name] not in (None, "optional"):
                if i + 1 >= len(words):
                    raise SbatchError(f"sbatch: option requires an argument -- '{word[1]}'", 255)
                i, value = i + 1, words[i + 1]
            options[name] = check_value(name, value)
        elif stop_at_positional:
            return options, words[i:]
        else:
            raise SbatchError(f"sbatch: error: unexpected argument '{word}' in a #SBATCH line")
        i += 1
    return options, []


def script_options(text: str) -> dict[str, str]:
    """The #SBATCH lines Slurm reads: those before the first line that is neither blank nor a comment."""
    lines = text.splitlines()
    if not lines or not lines[0].startswith("#!"):
        raise SbatchError("sbatch: error: This does not look like a batch script.  The first line must start with #! "
                          "followed by the path to an interpreter.")
    options = {}
    for line in lines[1:]:
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            break
        if line.startswith("#SBATCH"):
            words = shlex.split(line[len("#SBATCH"):], comments=True)
            options.update(parse_options(words, stop_at_positional=False)[0])
    return options


def node_names(nodes: int) -> tuple[str, list[str]]:
    """(SLURM_JOB_NODELIST, its hosts): every node is this machine."""
    if nodes == 1:
        return "localhost", ["localhost"]
    return f"127.0.0.[1-{nodes}]", [f"127.0.0.{i}" for i in range(1, nodes + 1)]


def expand_hostlist(nodelist: str) -> list[str]:
    """scontrol show hostnames: `a,b[1-3,7]` -> a b1 b2 b3 b7."""
    hosts = []
    for prefix, ranges, plain in re.findall(r"([^,\[]*)\[([^\]]+)\]|([^,\[\]]+)", nodelist):
        if plain:
            hosts.append(plain)
            continue
        for part in ranges.split(","):
            lo, _, hi = part.partition("-")
            hosts += [f"{prefix}{n:0{len(lo)}d}" for n in range(int(lo), int(hi or lo) + 1)]
    return hosts


def output_path(pattern: str, env: dict, submit_dir: str) -> Path:
    values = {"x": env["SLURM_JOB_NAME"], "j": env["SLURM_JOB_ID"], "A": env["SLURM_JOB_ID"], "a": "0",
              "u": env.get("USER", "user"), "N": env["SLURMD_NODENAME"], "%": "%"}
    path = Path(re.sub(r"%([xjAauN%])", lambda m: values[m.group(1)], pattern))
    return path if path.is_absolute() else Path(submit_dir) / path


def sbatch(argv: list[str], calls: Path, run: bool) -> int:
    try:
        cli, rest = parse_options(argv, stop_at_positional=True)
        if not rest:
            raise SbatchError("sbatch: error: no batch script given (the fake does not read stdin)")
        script, script_args = Path(rest[0]), rest[1:]
        text = script.read_text()
        options = {**script_options(text), **cli}
    except SbatchError as e:
        print(e, file=sys.stderr)
        return e.code
    except OSError as e:
        print(f"sbatch: error: Unable to open file {e.filename}", file=sys.stderr)
        return 1
    calls.parent.mkdir(parents=True, exist_ok=True)
    with open(calls, "a+") as log:
        log.seek(0)
        job_id = 1000 + len(log.readlines())
    print(f"Submitted batch job {job_id}", flush=True)
    record = {"args": argv[:len(argv) - len(rest)], "script": text, "script_args": script_args, "id": job_id,
              "options": options}
    if run:
        record["exit_code"] = run_job(options, script, text, script_args, job_id, calls.parent)
    with open(calls, "a") as log:
        log.write(json.dumps(record) + "\n")
    return record["exit_code"] if run and "wait" in options else 0


def run_job(options: dict, script: Path, text: str, script_args: list[str], job_id: int, spool: Path) -> int:
    nodes = int(options.get("nodes", "1").split("-")[0])
    per_node = int(options.get("ntasks-per-node", "1"))
    nodelist, hosts = node_names(nodes)
    submit_dir = os.getcwd()
    env = {**os.environ, "SLURM_JOB_ID": str(job_id), "SLURM_JOBID": str(job_id),
           "SLURM_JOB_NAME": options.get("job-name", script.name), "SLURM_JOB_NODELIST": nodelist,
           "SLURM_NODELIST": nodelist, "SLURM_NNODES": str(nodes), "SLURM_JOB_NUM_NODES": str(nodes),
           "SLURM_NTASKS": str(nodes * per_node), "SLURM_NPROCS": str(nodes * per_node),
           "SLURM_NTASKS_PER_NODE": str(per_node), "SLURM_SUBMIT_DIR": submit_dir, "SLURM_SUBMIT_HOST": "localhost",
           "SLURM_CLUSTER_NAME": "fake", "SLURM_PROCID": "0", "SLURM_NODEID": "0", "SLURM_LOCALID": "0",
           "SLURMD_NODENAME": hosts[0]}
    for name in ("cpus-per-task", "gpus-per-node", "partition"):
        if name in options:
            env[f"SLURM_{name.upper().replace('-', '_')}"] = options[name]
    out = output_path(options.get("output", "slurm-%j.out"), env, submit_dir)
    if not out.parent.is_dir():
        print(f"fake sbatch: --output folder {out.parent} does not exist (Slurm would lose the job's output)",
              file=sys.stderr)
        return 1
    spooled = spool / f"job{job_id}.script"  # Slurm runs a copy: editing the script after submission changes nothing
    spooled.write_text(text)
    spooled.chmod(0o755)
    workdir = options.get("chdir", submit_dir)
    with open(out, "w") as log:
        return subprocess.call([*shlex.split(text.splitlines()[0][2:]), str(spooled), *script_args], cwd=workdir,
                               env=env, stdout=log, stderr=subprocess.STDOUT)


def listening(pid: int) -> bool:
    import psutil  # a dependency of ray and deepspeed

    try:
        procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
        return any(c.status == psutil.CONN_LISTEN for p in procs for c in p.net_connections(kind="inet"))
    except psutil.Error:
        return False


def srun(argv: list[str]) -> int:
    kill_on_bad_exit, i = False, 0
    while i < len(argv) and argv[i].startswith("-"):
        name, _, value = argv[i].lstrip("-").partition("=")
        if name in ("kill-on-bad-exit", "K"):
            kill_on_bad_exit = value != "0"
        elif name in ("label", "l", "unbuffered", "u"):
            pass
        else:
            print(f"fake srun: option {argv[i]} not supported", file=sys.stderr)
            return 1
        i += 1
    command = argv[i:]
    per_node, nodes = int(os.environ["SLURM_NTASKS_PER_NODE"]), int(os.environ["SLURM_NNODES"])
    hosts = expand_hostlist(os.environ["SLURM_JOB_NODELIST"])
    tasks = []

    def kill_tasks():
        for proc in tasks:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)

    def cancelled(*_):  # the tasks have process groups of their own: a job cancelled or timed out takes them along
        kill_tasks()
        sys.exit(128 + signal.SIGTERM)

    signal.signal(signal.SIGTERM, cancelled)
    for task in range(nodes * per_node):
        node = task // per_node
        if node > 0 and task % per_node == 0:
            # The nodes share this machine: a later node starts once the first node's launcher listens, so it cannot
            # claim the first node's rendezvous port (on real nodes the two ports are on different hosts).
            deadline = time.time() + 120
            while not listening(tasks[0].pid) and tasks[0].poll() is None and time.time() < deadline:
                time.sleep(0.1)
        env = {**os.environ, "SLURM_PROCID": str(task), "SLURM_NODEID": str(node), "SLURM_LOCALID": str(task % per_node),
               "SLURMD_NODENAME": hosts[node], "SLURM_STEP_ID": "0"}
        tasks.append(subprocess.Popen(command, env=env, start_new_session=True))
    codes, killed = {}, False
    while len(codes) < len(tasks):
        for n, proc in enumerate(tasks):
            if n not in codes and proc.poll() is not None:
                codes[n] = proc.returncode
                if proc.returncode != 0 and kill_on_bad_exit and not killed:
                    print(f"srun: error: task {n}: exited with exit code {proc.returncode}; terminating the job step",
                          file=sys.stderr)
                    kill_tasks()
                    killed = True
        time.sleep(0.1)
    return next((c for c in codes.values() if c != 0), 0)


def scontrol(argv: list[str]) -> int:
    if argv[:2] != ["show", "hostnames"]:
        print(f"fake scontrol: only `show hostnames` is supported, not {argv}", file=sys.stderr)
        return 1
    sys.stdout.write("".join(f"{host}\n" for host in expand_hostlist(argv[2] if len(argv) > 2 else
                                                                       os.environ["SLURM_JOB_NODELIST"])))
    return 0


def install(bin_dir: Path, calls: Path | None = None, run: bool = True) -> Path:
    """sbatch, srun and scontrol in `bin_dir` (put it first on PATH); returns the JSONL file sbatch appends to."""
    calls = calls or bin_dir / "sbatch_calls.jsonl"
    bin_dir.mkdir(parents=True, exist_ok=True)
    here = str(Path(__file__).resolve().parent)
    for command, call in (("sbatch", f"sbatch(sys.argv[1:], Path({str(calls)!r}), {run})"),
                          ("srun", "srun(sys.argv[1:])"), ("scontrol", "scontrol(sys.argv[1:])")):
        path = bin_dir / command
        path.write_text(f"#!{sys.executable}\nimport sys\nfrom pathlib import Path\nsys.path.insert(0, {here!r})\n"
                        f"from fakeslurm import {command}\nsys.exit({call})\n")
        path.chmod(0o755)
    return calls
