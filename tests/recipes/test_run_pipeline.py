"""The pipeline runner: a stage reruns exactly when its command, a file it names, its inputs or an earlier stage it
reads changed; a failed stage leaves no stamp and stops the run. Fake stages (tiny Python one-liners) keep it fast."""

import json
import os
import sys

import pytest
import yaml

from testkit import load_recipe

run_pipeline = load_recipe("run_pipeline")

# a -> b (reads a's output), c reads nothing of them; each stage appends its name to ran.log in the working folder,
# so a test sees what ran.
WRITE = "{python} -c \"import sys, pathlib; p = pathlib.Path(sys.argv[1]); p.mkdir(parents=True, exist_ok=True); " \
        "s = pathlib.Path(sys.argv[-1]); " \
        "(p / 'x').write_text((s / 'x' if s.is_dir() else s).read_text() if s != p else 'x'); " \
        "open('ran.log', 'a').write(p.name + chr(10))\""


def stages(tmp_path, a_config):
    return [
        {"name": "a", "outputs": ["a"], "run": f"{WRITE} {{run_dir}}/a {a_config}"},
        {"name": "b", "outputs": ["b"], "run": f"{WRITE} {{run_dir}}/b {{run_dir}}/a"},  # a folder: not hashed
        {"name": "c", "outputs": ["c"], "inputs": [str(tmp_path / "raw")], "run": f"{WRITE} {{run_dir}}/c"},
    ]


@pytest.fixture
def pipeline(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "doc.txt").write_text("raw text")
    config = tmp_path / "a.yaml"
    config.write_text("lr: 1\n")
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump({"run_dir": str(tmp_path / "run"), "stages": stages(tmp_path, config)}))

    def run(*extra):
        (tmp_path / "ran.log").unlink(missing_ok=True)
        records = run_pipeline.main(["--config", str(path), *extra])
        ran = (tmp_path / "ran.log").read_text().split() if (tmp_path / "ran.log").exists() else []
        return ran, {r["name"]: r["status"] for r in records}

    return run, tmp_path, config


def test_second_run_skips_every_stage(pipeline):
    run, tmp_path, _ = pipeline
    assert run()[0] == ["a", "b", "c"]
    ran, status = run()
    assert ran == [] and set(status.values()) == {"skipped"}
    record = json.loads((tmp_path / "run" / "pipeline.json").read_text())
    assert [s["name"] for s in record["stages"]] == ["a", "b", "c"] and record["stages"][1]["reads"] == ["a"]
    assert (tmp_path / "run" / "logs" / "a.log").exists()


def test_a_changed_config_reruns_its_stage_and_the_stages_reading_it(pipeline):
    run, _, config = pipeline
    run()
    config.write_text("lr: 2\n")
    assert run()[0] == ["a", "b"]  # c reads neither the config nor a's output


def test_changed_inputs_or_command_or_missing_output_rerun_the_stage(pipeline):
    run, tmp_path, _ = pipeline
    run()
    (tmp_path / "raw" / "doc.txt").write_text("other raw text")
    assert run()[0] == ["c"]
    os.utime(tmp_path / "raw" / "doc.txt", ns=(0, 0))  # a touched file counts as changed, like make
    assert run()[0] == ["c"]
    (tmp_path / "run" / "b" / "x").unlink()
    (tmp_path / "run" / "b").rmdir()
    assert run()[0] == ["b"]
    assert run("--force", "true")[0] == ["a", "b", "c"]
    assert run("--run_dir", str(tmp_path / "other"))[0] == ["a", "b", "c"]  # another run folder is another run


def test_a_failed_stage_stops_the_run_and_is_retried(pipeline, tmp_path):
    run, tmp_path, config = pipeline
    config.unlink()  # stage a reads it: it fails
    with pytest.raises(SystemExit, match="a failed with exit code 1; its log: .*logs/a.log"):
        run()
    record = json.loads((tmp_path / "run" / "pipeline.json").read_text())
    assert [(s["name"], s["status"]) for s in record["stages"]] == [("a", "failed")]
    assert not (tmp_path / "run" / ".stages" / "a.json").exists()
    config.write_text("lr: 1\n")
    assert run()[0] == ["a", "b", "c"]


def test_an_output_named_inside_a_json_argument_is_read():
    """`--datasets '{"path": "<run>/pairs/pairs.jsonl"}'`: the stage reads the pairs, so a new pairs stage reruns it."""
    reads = [a for a in ('{"path": "run/pairs/pairs.jsonl", "format": "preference"}', "run/pairs", "run/pairs/x",
                         "--dir=run/pairs", "run/pairs2", "other/run/pairs", '{"path": "run/pairsX"}')
             if run_pipeline.mentions(a, "run/pairs")]
    assert reads == ['{"path": "run/pairs/pairs.jsonl", "format": "preference"}', "run/pairs", "run/pairs/x",
                     "--dir=run/pairs"]


def test_placeholders_are_filled_and_json_braces_pass_through(tmp_path):
    stage = run_pipeline.Stage(name="s", run="{bin}/accelerate launch --num_processes 2 --num_cpu_threads_per_process "
                                              "{threads} x.py --sets '{\"path\": \"{run_dir}/t\"}'")
    argv = run_pipeline.command(stage, "outputs/r")
    assert argv[0] == os.path.join(os.path.dirname(sys.executable), "accelerate")
    assert argv[5] == str(max(1, (os.cpu_count() or 1) // 2))
    assert argv[-1] == '{"path": "outputs/r/t"}'


@pytest.mark.parametrize("stage, message", [
    ({"name": "s", "run": "echo {rundir}"}, "unknown placeholder(s) ['rundir']"),
    ({"name": "s"}, "expected a mapping with name and run"),
    ({"name": "s", "run": "x", "output": ["o"]}, "expected a mapping with name and run"),
])
def test_bad_stages_are_one_line_exit_2(tmp_path, capsys, stage, message):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"stages": [stage]}))
    with pytest.raises(SystemExit) as exc:
        run_pipeline.main(["--config", str(path)])
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_the_demo_pipeline_parses_and_names_every_stage_it_promises(repo_root, monkeypatch):
    monkeypatch.chdir(repo_root)
    (args,) = run_pipeline.make_parser().parse(["--config", "configs/pipeline/tiny.yaml"])
    names = [s.name for s in args.stages]
    for stage in ("data", "tokenizer", "pack", "pretrain", "sft-lora", "merge-lora", "dpo", "eval", "export", "push",
                  "classify", "report"):
        assert stage in names
    pretrain = run_pipeline.command(next(s for s in args.stages if s.name == "pretrain"), "outputs/x")
    assert "launch/accelerate/zero3.yaml" in pretrain and pretrain[pretrain.index("--num_processes") + 1] == "2"
