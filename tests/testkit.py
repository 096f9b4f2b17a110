"""Helpers shared by the test modules (import as `from testkit import ...`; fixtures live in conftest.py)."""

import hashlib
import importlib
import inspect
import json
import os
import re
import runpy
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable

import pytest

from llm_recipes.training import complete_checkpoints
import warmproc

REPO_ROOT = Path(__file__).resolve().parent.parent
ACCELERATE = [sys.executable, "-m", "accelerate.commands.launch"]
DATA_DIR = Path(os.environ.get("DATA_DIR", REPO_ROOT.parent / "shared" / "data")).resolve()


# --- fixtures built once ----------------------------------------------------------------------------------------------
# An expensive fixture (a trained tokenizer, a packed corpus, a baseline training run) is built once per hash of what
# it is made from, into a folder that every xdist worker of the session and every later session of this checkout
# reuses. Under the system temp dir, so exported paths read "<tmp>/..." as a user's do; per checkout, so a fresh clone
# starts cold. LLM_RECIPES_TEST_CACHE moves it; `make clean` empties it.
FIXTURE_CACHE = Path(os.environ.get("LLM_RECIPES_TEST_CACHE") or Path(tempfile.gettempdir()) / "llm-recipes-tests"
                     / hashlib.sha256(str(REPO_ROOT).encode()).hexdigest()[:12])
ALWAYS_HASHED = ("llm_recipes", "requirements.txt", "tests/testkit.py", "tests/conftest.py")
BUILT_MARKER = ".built"
PRUNE_BEFORE = time.time() - 3600  # a build older than this is an earlier session's: a newer one may replace it


def _hash_path(h, path: Path) -> None:
    """Repo files by content (code, configs), anything else (the shipped data) by size and modification time."""
    files = sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts) if path.is_dir() \
        else [path]
    for p in files:
        h.update(str(p).encode() + b"\0")
        if p.resolve().is_relative_to(REPO_ROOT):
            h.update(p.read_bytes())
        else:
            st = p.stat()
            h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())


def built_once(name: str, build: Callable[[Path], object], inputs: Iterable[str | Path] = (), key: object = ()) -> Path:
    """The folder `build(folder)` fills, built once per hash of: `build`'s own source, `key` (e.g. the folders of the
    cached fixtures it starts from, whose names carry their own hashes), the files and folders in `inputs` (repo paths
    by content, data by size and mtime) and ALWAYS_HASHED. So editing recipes/pack.py rebuilds the packed corpus and
    what is built on it, not the tokenizer. A file lock makes parallel workers wait for one build; the folder counts
    as built only once its marker is written, so a build killed half-way is redone, never reused."""
    from filelock import FileLock  # a dependency of huggingface_hub and datasets

    h = hashlib.sha256(f"{name}\0{inspect.getsource(build)}\0{key!r}\0{sys.version}".encode())
    for item in (*ALWAYS_HASHED, *inputs):
        _hash_path(h, REPO_ROOT / item if not Path(item).is_absolute() else Path(item))
    out = FIXTURE_CACHE / f"{name}-{h.hexdigest()[:16]}"
    if (out / BUILT_MARKER).exists():
        return out
    FIXTURE_CACHE.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out) + ".lock"):
        if not (out / BUILT_MARKER).exists():
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            build(out)
            (out / BUILT_MARKER).write_text(time.strftime("%Y-%m-%d %H:%M:%S\n"))
            for stale in FIXTURE_CACHE.iterdir():  # this fixture's builds of earlier sessions, on other inputs
                marker = stale / BUILT_MARKER
                if (stale != out and re.fullmatch(rf"{re.escape(name)}-[0-9a-f]{{16}}", stale.name)
                        and marker.exists() and marker.stat().st_mtime < PRUNE_BEFORE):
                    shutil.rmtree(stale, ignore_errors=True)
    return out


# Tests that start two or more processes (ZeRO-3 launches, two "machines", Ray clusters) run one after the other on one
# xdist worker (`make test` runs `--dist loadgroup`): two at once would share the 2 cores four ways, and some of them
# take fixed ports.
TWO_PROCESSES = pytest.mark.xdist_group("two-processes")


# --- llama.cpp's source, for the GGUF tests ------------------------------------------------------------------------
LLAMA_CPP_SDIST = "llama-cpp-python==0.3.36"  # the README's way to llama.cpp's source without git
_llama_cpp_fetch = None  # the download conftest starts at collection: (thread, [error])


def prefetch_llama_cpp_source() -> None:
    """Start llama_cpp_source() in a thread: the 77 MB download (10-60 s, network-bound) overlaps the tests that run
    before the first GGUF test instead of holding a worker (and the other at the file lock)."""
    global _llama_cpp_fetch
    import threading

    if _llama_cpp_fetch or os.environ.get("LLAMA_CPP_DIR") or (_llama_cpp_target() / "convert_hf_to_gguf.py").is_file():
        return
    error: list[BaseException] = []

    def fetch():
        try:
            _fetch_llama_cpp()
        except BaseException as e:  # re-raised by llama_cpp_source() in the test that needs it
            error.append(e)

    thread = threading.Thread(target=fetch, name="llama.cpp download", daemon=True)
    thread.start()
    _llama_cpp_fetch = (thread, error)


def llama_cpp_source() -> Path:
    """$LLAMA_CPP_DIR, or llama.cpp's converter, conversion/, gguf-py and reference vocabularies unpacked once per
    machine under .cache/ from the llama-cpp-python sdist; a failed download fails the test."""
    if os.environ.get("LLAMA_CPP_DIR"):
        return Path(os.environ["LLAMA_CPP_DIR"])
    if _llama_cpp_fetch:
        thread, error = _llama_cpp_fetch
        thread.join()
        if error:
            raise error[0]
    return _fetch_llama_cpp()


def _llama_cpp_target() -> Path:
    return REPO_ROOT / ".cache" / ("llama.cpp-" + LLAMA_CPP_SDIST.split("==")[1])


def _fetch_llama_cpp() -> Path:
    import tarfile

    from filelock import FileLock

    target = _llama_cpp_target()
    target.parent.mkdir(exist_ok=True)
    with FileLock(str(target) + ".lock"), tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        if not (target / "convert_hf_to_gguf.py").is_file():
            done = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary",
                                   ":all:", "-d", tmp, LLAMA_CPP_SDIST], capture_output=True, text=True)
            # a failed download fails: every family's GGUF check hangs on it (the package index is reachable in CI)
            assert done.returncode == 0, f"cannot download {LLAMA_CPP_SDIST}: {done.stderr.strip()[-2000:]}"
            (sdist,) = Path(tmp).glob("*.tar.gz")
            with tarfile.open(sdist) as tar:
                prefix = sdist.name.removesuffix(".tar.gz") + "/vendor/llama.cpp/"
                members = [m for m in tar.getmembers() if m.name.startswith(prefix) and m.name[len(prefix):].startswith(
                    ("convert_hf_to_gguf.py", "conversion/", "gguf-py/", "models/ggml-vocab-"))]
                for m in members:
                    m.name = m.name[len(prefix):]
                tar.extractall(Path(tmp) / "llama.cpp", members=members, filter="data")
            (Path(tmp) / "llama.cpp").rename(target)
    return target


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now, for a launch's rendezvous."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_recipe(name: str):
    """recipes/<name>.py as a module, for tests that pick the recipe by name."""
    return importlib.import_module(f"recipes.{name}")


def run_recipe_error(name: str, argv: list[str], capsys) -> str:
    """Run a recipe that must refuse its input: returns stderr, asserts the usage-error exit code 2."""
    with pytest.raises(SystemExit) as exc:
        load_recipe(name).main(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


def run_main(name: str, argv: list[str], capsys, caplog) -> str:
    """recipes/<name>.py's main in this process, an interpreter start (~7 s of imports) fewer than a subprocess: what
    it printed and logged, for the same checks as a subprocess's output. For the runs a test does not kill."""
    capsys.readouterr()  # only this run's output: not an earlier in-process run's of the same test
    caplog.clear()
    load_recipe(name).main(argv)
    return capsys.readouterr().out + caplog.text


def run_as_main(script: Path, argv: list[str], monkeypatch, capsys, env: dict | None = None) -> tuple[int, str]:
    """`python <script> <argv>` with its own `__main__` block, but in this process (runpy): an interpreter start
    (~7 s of imports) fewer. For scripts a test runs whole and does not kill, and that read no environment at import.
    Returns the exit code and what it printed; the environment, sys.argv, the working directory and torch's process-
    wide settings (grad mode, threads, default dtype, determinism, RNG) are put back, so later tests in this worker
    see none of the script's (a benchmark turns gradients off for good, as a script may)."""
    import random

    import numpy as np
    import torch

    saved_env = dict(os.environ)
    saved_torch = (torch.is_grad_enabled(), torch.get_num_threads(), torch.get_default_dtype(),
                   torch.are_deterministic_algorithms_enabled(), torch.get_rng_state(), random.getstate(),
                   np.random.get_state())
    capsys.readouterr()
    try:
        with monkeypatch.context() as m:
            m.setattr(sys, "argv", [str(script), *argv])
            m.syspath_prepend(str(Path(script).parent))  # as `python script` does: its siblings import
            m.chdir(REPO_ROOT)
            os.environ.update(env or {})
            try:
                runpy.run_path(str(script), run_name="__main__")
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        grad, threads, dtype, deterministic, rng, py_rng, np_rng = saved_torch
        torch.set_grad_enabled(grad)
        torch.set_num_threads(threads)
        torch.set_default_dtype(dtype)
        torch.use_deterministic_algorithms(deterministic)
        torch.set_rng_state(rng)
        random.setstate(py_rng)
        np.random.set_state(np_rng)
    out = capsys.readouterr()
    return code, out.out + out.err


def greedy_ids(model, tokenizer, messages: list[dict], max_new_tokens: int) -> list[int]:
    """The new token ids of a greedy `model.generate` on `messages` through the chat template, one prompt, no padding:
    what a recipe's answers (chat, serve, on-policy pairs) are checked against."""
    import torch

    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False)
    return out[0, ids["input_ids"].shape[1]:].tolist()


def start_recipe(name: str, argv: list[str], processes: int = 1, port: int = 29661) -> subprocess.Popen:
    """recipes/<name>.py in its own process group (so a kill takes the whole launch): plain python, or
    `accelerate launch` with ZeRO-3 on 2+ processes; stdout and stderr together, as text."""
    launcher = [sys.executable] if processes == 1 else [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file",
        str(REPO_ROOT / "launch/accelerate/zero3.yaml"), "--num_processes", str(processes), "--main_process_port",
        str(port)]
    return warmproc.popen([*launcher, str(REPO_ROOT / f"recipes/{name}.py"), *argv], cwd=REPO_ROOT,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, start_new_session=True)


# The shipped samples read directly (English Wikipedia, Shakespeare, web text; Chinese ci, Analects, hotel reviews),
# so the tests need no data_prep run. The demo's configs/{tokenizer,pack}/tiny.yaml read data_prep's output instead.
SHIPPED_CORPUS = """
train_sources:
  - {path: "${DATA_DIR}/wikitext2/valid.txt", sample_by: line}
  - {path: "${DATA_DIR}/tinyshakespeare/input.txt", sample_by: paragraph}
  - {path: "${DATA_DIR}/c4_demo/c4_demo.jsonl"}
  - {path: "${DATA_DIR}/chinese_poetry/ci.song.0.json", text_column: paragraphs}
  - {path: "${DATA_DIR}/chinese_poetry/lunyu.json", text_column: paragraphs}
  - {path: "${DATA_DIR}/chnsenticorp/ChnSentiCorp_htl_all.csv", text_column: review}
validation_split_size: 0.05
seed: 42
"""


# Secrets planted in a run's command line or environment, then searched for in everything it wrote and logged.
TOKEN = "hf_" + "PlantedSecret9" * 3
WANDB_KEY = "0123456789abcdef" * 2 + "feedc0de"  # the 40-hex shape of a W&B API key
PLANTED_ENV = {"HF_TOKEN": TOKEN, "HUGGING_FACE_HUB_TOKEN": TOKEN, "WANDB_API_KEY": WANDB_KEY}


# Console lines that tell a user nothing: llm_recipes/__init__.py silences the libraries' by message, our own causes
# are fixed (no pinned memory without an accelerator, lengths counted without the length check, a list for select).
NOISE = ("Setting accelerator to CPU", "'pin_memory' argument is set as true", "`is_gradient_checkpointing` is deprecated",
         "Token indices sequence length is longer than", "couldn't be hashed properly", "Building prefix dict",
         "Prefix dict has been built")  # the last two: jieba loading its dictionary, once per data_prep worker


def noise(log: str) -> list[str]:
    return [line for line in log.splitlines() if any(n in line for n in NOISE)]


def secret_leaks(folder: Path, log: str) -> list[str]:
    """The files under `folder` (and "log") that contain a planted secret."""
    found = [str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()
             and any(secret.encode() in p.read_bytes() for secret in (TOKEN, WANDB_KEY))]
    return found + (["log"] if TOKEN in log or WANDB_KEY in log else [])


def pretrain_args(packed_dir: Path, output_dir: Path, *extra: str) -> list[str]:
    """CLI of a quick tiny-preset pretraining run on the packed test data."""
    return ["--config", str(REPO_ROOT / "configs/pretrain/tiny.yaml"), "--dataset_path", str(packed_dir),
            "--output_dir", str(output_dir), "--report_to", "none", "--per_device_train_batch_size", "8",
            "--warmup_steps", "5", *extra]


# --- kill and resume ----------------------------------------------------------------------------------------------


def kill_when(proc, condition, timeout: float = 600, group: bool = False, what: str = "the kill point") -> None:
    """SIGKILL `proc` (its whole process group with `group`) as soon as `condition()` holds; fails if the run ends
    first."""
    deadline = time.time() + timeout
    while not condition():
        assert proc.poll() is None and time.time() < deadline, f"run ended before {what}"
        time.sleep(0.002)
    if group:
        kill_tree(proc.pid)
    else:
        proc.send_signal(signal.SIGKILL)
    proc.wait()


def kill_tree(*pids: int) -> None:
    """SIGKILL process groups and every descendant of their leaders: torchrun (inside `accelerate launch`) starts each
    worker in a session of its own, so killing the launcher's group alone would leave the workers training on. All
    trees are listed before any is killed, and a group already gone is no error: a peer (the other machine of a
    multi-node run) may exit on its own the moment the first one dies."""
    import psutil  # a dependency of deepspeed and ray

    workers = []
    for pid in pids:
        try:
            workers += psutil.Process(pid).children(recursive=True)
        except psutil.NoSuchProcess:
            pass
    for pid in pids:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for worker in workers:
        try:
            worker.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(workers, timeout=30)  # gone, not just signalled, before the caller looks at what they wrote


def kill_once_exists(proc, path: Path, timeout: float = 600, group: bool = False) -> None:
    """SIGKILL `proc` as soon as `path` exists."""
    kill_when(proc, path.exists, timeout, group, what=f"{path.name} appeared")


def kill_during_evaluation(proc, run: Path, step: int, timeout: float = 600) -> None:
    """SIGKILL `proc` once the evaluation at `step` has scored its first batch (a run with log_data_order)."""
    def evaluating() -> bool:
        path = run / "data_order" / "eval-rank0.txt"
        return path.exists() and any(line.split()[0] == str(step) for line in path.read_text().splitlines()[:10_000])
    kill_when(proc, evaluating, timeout, what=f"the evaluation at step {step}")


def data_order(run: Path, rank: int = 0) -> list[list[str]]:
    """The `step hash` lines a run with log_data_order wrote for one rank (none yet: empty)."""
    path = run / "data_order" / f"rank{rank}.txt"
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def newest_checkpoint_step(run: Path) -> int:
    """Where a resumed run must start: the newest complete checkpoint's step (0: none, start from scratch)."""
    complete = complete_checkpoints(run)
    return int(complete[-1].name.split("-")[1]) if complete else 0


def assert_resumed_at(output: str, max_steps: int, checkpoint: int) -> None:
    """The resumed process logged the step after the checkpoint first (a run that silently restarted from step 0
    would log the same losses, training being deterministic)."""
    logged = [int(m) for m in re.findall(rf"^step (\d+)/{max_steps} \| loss", output, re.M)]
    assert logged and logged[0] == checkpoint + 1, (checkpoint, logged[:3])


def assert_resumed_batches(baseline: Path, killed: Path, lines_before: int, checkpoint: int, max_steps: int,
                           rank: int = 0) -> None:
    """The resumed process added exactly the batches after the checkpoint, in the uninterrupted run's order: none
    replayed, none skipped."""
    resumed = data_order(killed, rank)[lines_before:]
    assert [int(step) for step, _ in resumed] == list(range(checkpoint, max_steps)), rank
    assert [h for _, h in resumed] == [h for step, h in data_order(baseline, rank) if int(step) >= checkpoint], rank


def assert_same_update(baseline: Path, resumed: Path, checkpoint: int, weights: str, rel: float = 1e-3) -> None:
    """The resumed run ends with the uninterrupted run's weights: what the two runs changed after the checkpoint
    differs by under `rel` of the change itself (norms over all tensors). Not bit equality: MKL may round a sum
    differently in another process on some CPUs (CI saw 1e-5 weight differences once, this box never), and Adam
    turns such noise in near-zero gradients into steps of a full learning rate. A resume fault (optimizer or
    scheduler state lost, a batch replayed or skipped) changes a large part of the update."""
    from safetensors.torch import load_file

    start = load_file(baseline / f"checkpoint-{checkpoint}" / weights)
    final, reference = load_file(resumed / weights), load_file(baseline / weights)
    assert final.keys() == reference.keys() == start.keys()
    diff = {k: (final[k] - reference[k]).norm().item() ** 2 for k in reference}
    moved = sum((reference[k] - start[k]).norm().item() ** 2 for k in reference) ** 0.5
    worst = sorted(diff, key=diff.get, reverse=True)[:3]
    assert moved > 0 and sum(diff.values()) ** 0.5 <= rel * moved, (sum(diff.values()) ** 0.5 / moved, worst)


def history(run: Path) -> list[dict]:
    """The Trainer's log_history of a finished run."""
    return json.loads((run / "trainer_state.json").read_text())["log_history"]


def losses(log_history: list[dict]) -> dict[int, float]:
    return {e["step"]: e["loss"] for e in log_history if "loss" in e}


def tokens_seen(log_history: list[dict]) -> int:
    return [e["tokens_seen"] for e in log_history if "tokens_seen" in e][-1]


def assert_same_losses(baseline: Path, resumed: Path, checkpoint: int) -> None:
    """Every training loss the uninterrupted run logged after the checkpoint, the resumed run logged too (1e-5)."""
    expected, got = losses(history(baseline)), losses(history(resumed))
    after = [s for s in expected if s > checkpoint]
    assert after and all(abs(got[s] - expected[s]) <= 1e-5 for s in after), {s: (got[s], expected[s]) for s in after}


def assert_same_losses_and_weights(baseline: Path, resumed: Path, checkpoint: int) -> None:
    """After the checkpoint, the resumed pretraining run logs the uninterrupted run's losses, its token count, and
    ends with its weights: logits on a fixed input within 1e-4, room for the float noise that assert_same_update
    describes; losing the optimizer state at the resume moved them by 0.8 to 4."""
    import torch
    from transformers import LlamaForCausalLM

    assert_same_losses(baseline, resumed, checkpoint)
    assert tokens_seen(history(resumed)) == tokens_seen(history(baseline)) > 0  # counted on from the checkpoint
    x = torch.randint(0, 2048, (1, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        final = [LlamaForCausalLM.from_pretrained(d)(x).logits for d in (baseline, resumed)]
    assert torch.allclose(*final, atol=1e-4), (final[0] - final[1]).abs().max().item()


# --- model families as users bring them (../shared/models/: real tokenizers and chat templates) ----------------------

FAMILIES = ("llama3", "qwen2", "llama2-spm")
MODELS_DIR = DATA_DIR.parent / "models"
SYSTEM = {"role": "system", "content": "You answer briefly."}
TURNS = [{"role": "user", "content": "What is the capital of France?"}, {"role": "assistant", "content": "Paris."},
         {"role": "user", "content": "北京是哪个国家的首都？"},
         {"role": "assistant", "content": "中国。"}]
# family -> (stop tokens: eos first, then the end of turn; the masked text of the two answers, checked by hand)
FAMILY_EXPECTED = {
    "llama3": (["<|end_of_text|>", "<|eot_id|>"], ["Paris.<|eot_id|>", "中国。<|eot_id|>"]),
    "qwen2": (["<|endoftext|>", "<|im_end|>"], ["\nParis.<|im_end|>\n", "\n中国。<|im_end|>\n"]),  # TRL's variant
    "llama2-spm": (["</s>"], ["Paris. </s>", "中国。 </s>"]),
}



class ForceTokenAt:
    """A logits processor: `token_id` is the only choice when the sequence is `position` tokens long. Forcing a stop
    token shows that generation_config stops there (a random tiny model would never pick it by itself)."""

    def __init__(self, token_id: int, position: int):
        self.token_id, self.position = token_id, position

    def __call__(self, input_ids, scores):
        if input_ids.shape[1] == self.position:
            scores = scores.new_full(scores.shape, -float("inf"))
            scores[:, self.token_id] = 0
        return scores
