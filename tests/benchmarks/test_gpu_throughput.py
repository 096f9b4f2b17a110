"""benchmarks/gpu_throughput.py runs its real path (recipes/pretrain.py under accelerate + ZeRO-3) on CPU, so the GPU
benchmark cannot rot between the sessions that have a GPU."""

import sys

import pytest


@pytest.mark.slow
def test_gpu_throughput_smoke_on_cpu(tiny_tokenizer_dir, repo_root, tmp_path):
    sys.path.insert(0, str(repo_root / "benchmarks"))
    import gpu_throughput

    result = gpu_throughput.main(["--tokenizer", str(tiny_tokenizer_dir), "--preset", "tiny", "--block_size", "64",
                                  "--micro_batch", "2", "--steps", "3", "--warmup", "1", "--cpu",
                                  "--out", str(tmp_path / "result.json")])
    assert result["steps_timed"] == 2 and result["tokens_per_second"] > 0
    assert result["mfu"] is None and result["device"] == "cpu"  # no peak to compare with on a CPU
    assert (tmp_path / "result.json").exists()
