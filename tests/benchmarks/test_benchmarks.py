"""Every script in benchmarks/ runs end to end in its --tiny mode (seconds, as a subprocess, the way `make bench` runs
it) and prints its `ratio ...` line: ours against the baseline measured in the same command. So no benchmark rots
between the sessions that run it for real. Timings are never asserted. gpu_throughput.py has its own test."""

import os
import re
import subprocess
import sys

import pytest
import torch
import warmproc

# script -> its arguments besides --tiny ({name}: a fixture), and whether it is slow (over ~8 s on a quiet 2-core box)
SCRIPTS = {
    "pretrain_step": ([], False),
    "export_time": ([], False),
    "data_prep_bench": (["--work_dir", "{tmp_path}"], False),
    "eval_throughput": ([], False),
    "tokenize_pack": (["--tokenizer", "{tiny_tokenizer_dir}", "--config", "{pack_config}"], True),
    "sft_packing": (["--model", "{tiny_chat_model_dir}"], True),
    "classify_augment": (["--model", "{tiny_chat_model_dir}"], True),
    "dpo_preference": (["--model", "{tiny_chat_model_dir}"], True),
    "dpo_memory": (["--tokenizer", "{tiny_tokenizer_dir}"], True),
    "continued_pretraining": ([], True),
    "data_prep_scale": (["--work_dir", "{tmp_path}"], True),
    "data_prep_quality": ([], True),
    "pack_scale": (["--work_dir", "{tmp_path}"], True),
}
RATIO_LINE = re.compile(r"^ratio\b.*\d", re.MULTILINE)


def test_every_benchmark_is_run_here(repo_root):
    scripts = {p.stem for p in (repo_root / "benchmarks").glob("*.py")}
    assert scripts == set(SCRIPTS) | {"gpu_throughput"}  # gpu_throughput: tests/benchmarks/test_gpu_throughput.py


@pytest.mark.parametrize("name", [pytest.param(n, marks=[pytest.mark.slow] if slow else []) for n, (_, slow)
                                  in SCRIPTS.items()])
def test_tiny_run_prints_its_ratio(name, repo_root, data_dir, request):
    argv = [a.format(**{f: request.getfixturevalue(f) for f in re.findall(r"{(\w+)}", a)}) for a in SCRIPTS[name][0]]
    # one torch thread: on a shared 2-core box two threads spin-wait for each other (this folder took 1.5x as long)
    env = {**os.environ, "DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    done = warmproc.run([sys.executable, str(repo_root / "benchmarks" / f"{name}.py"), "--tiny", *argv],
                        cwd=repo_root, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    assert RATIO_LINE.search(done.stdout), done.stdout[-3000:]


def make_bench(repo_root, data_dir, bench: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-s", "bench", f"BENCH={bench}"], cwd=repo_root, capture_output=True, text=True,
                          env={**os.environ, "DATA_DIR": str(data_dir)}, timeout=300, check=False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA, make bench runs the GPU benchmark for real")
def test_make_bench_skips_the_gpu_benchmark_without_cuda(repo_root, data_dir):
    done = make_bench(repo_root, data_dir, "gpu_throughput")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "gpu_throughput: skipped (no CUDA device)" in done.stdout


def test_make_bench_refuses_an_unknown_name(repo_root, data_dir):
    done = make_bench(repo_root, data_dir, "no_such_benchmark")
    assert done.returncode != 0 and "no benchmarks/no_such_benchmark.py" in done.stdout + done.stderr
