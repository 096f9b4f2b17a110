"""The same YAML on Ray (a local 2-CPU cluster) gives the same bytes; on Slurm it submits a chained job array."""

import json
import re

import pytest
from dp_helpers import TINY, run, split_hashes
from testkit import TWO_PROCESSES

from data_prep.cli import main


@pytest.mark.slow
@TWO_PROCESSES
def test_ray_gives_byte_identical_output_and_report(repo_root, tmp_path, tiny_run):
    ray = pytest.importorskip("ray")
    local = tiny_run
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        on_ray = run(repo_root, tmp_path / "ray", "--executor", "ray")
    finally:
        ray.shutdown()
    assert split_hashes(on_ray) == split_hashes(local) and len(split_hashes(local)) >= 6
    assert json.loads((on_ray / "report.json").read_text()) == json.loads((local / "report.json").read_text())
    assert (on_ray / "report.md").read_text() == (local / "report.md").read_text()
    assert "executor: ray" in (on_ray / "resolved_config.yaml").read_text()


def test_slurm_submits_job_arrays_chained_by_dependencies(repo_root, tmp_path, fake_sbatch):
    out = tmp_path / "slurm"
    main(["--config", str(repo_root / TINY), "--output_dir", str(out), "--executor", "slurm",
          "--slurm_partition", "cpu", "--tasks", "4", "--dedup_tasks", "3", "--slurm_time", "01:00:00"])
    calls = [json.loads(line) for line in fake_sbatch.read_text().splitlines()]
    # datatrove also submits a small stats-merging job after each stage; the pipeline jobs run launch_pickled_pipeline.
    jobs = {re.search(r"#SBATCH --job-name=(\S+)", c["script"]).group(1): c for c in calls
            if "launch_pickled_pipeline" in c["script"]}
    for stage in ("documents", "buckets", "clusters", "output", "publish"):
        assert f"data_prep_{stage}" in jobs, sorted(jobs)
        assert (tmp_path / "slurm_work" / "logs" / stage / "launch_script.slurm").exists()
    docs, buckets, clusters, output, publish = (
        jobs[f"data_prep_{s}"] for s in ("documents", "buckets", "clusters", "output", "publish"))
    assert "#SBATCH --array=0-3%2" in docs["script"] and "#SBATCH --partition=cpu" in docs["script"]
    assert "#SBATCH --time=01:00:00" in docs["script"] and "launch_pickled_pipeline" in docs["script"]
    assert "#SBATCH --array=0-2%2" in buckets["script"] and "#SBATCH --array=0-0" in clusters["script"]
    assert "#SBATCH --array=0-3%2" in output["script"]
    assert not any(a.startswith("--dependency") for a in docs["args"])
    assert f"--dependency=afterok:{docs['id']}" in buckets["args"]
    assert f"--dependency=afterok:{buckets['id']}" in clusters["args"]
    assert f"--dependency=afterok:{clusters['id']}" in output["args"]
    assert f"--dependency=afterok:{output['id']}" in publish["args"]
    assert not out.exists()  # nothing is published until the publish job has run


def test_slurm_needs_a_partition(repo_root, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--config", str(repo_root / TINY), "--executor", "slurm"])
    assert exc.value.code == 2 and "slurm_partition" in capsys.readouterr().err
