"""testkit.built_once, which the expensive fixtures rely on: built once per inputs' hash, rebuilt when an input changes,
never reused half-built; testkit.run_as_main, which runs whole scripts in a worker that later tests share: nothing
process-wide the script changes outlives it."""

import os
import sys

import torch

import testkit
from testkit import BUILT_MARKER, built_once, run_as_main


def test_built_once_reuses_rebuilds_on_change_and_never_reuses_a_half_build(tmp_path, monkeypatch):
    monkeypatch.setattr(testkit, "FIXTURE_CACHE", tmp_path / "cache")
    source = tmp_path / "input.txt"
    source.write_text("one")
    builds = []

    def build(out):
        builds.append(out)
        (out / "copy.txt").write_text(source.read_text())

    first = built_once("thing", build, inputs=[source])
    assert built_once("thing", build, inputs=[source]) == first and len(builds) == 1  # reused
    source.write_text("two!")  # size and mtime change: a new build beside the old one
    second = built_once("thing", build, inputs=[source])
    assert second != first and (second / "copy.txt").read_text() == "two!" and len(builds) == 2
    (second / BUILT_MARKER).unlink()  # as a build killed before its marker
    assert built_once("thing", build, inputs=[source]) == second and len(builds) == 3
    assert (second / BUILT_MARKER).exists()


SCRIPT = """
import os, sys, torch
from sibling import VALUE  # a module beside the script, as `python script.py` finds it
torch.set_grad_enabled(False)
torch.set_num_threads(1)
torch.set_default_dtype(torch.float64)
torch.manual_seed(123)
os.environ["SCRIPT_SET"] = "1"
print("argv", sys.argv[1:], VALUE, os.environ["GIVEN"])
sys.exit(3)
"""


def test_run_as_main_puts_back_what_the_script_changed(tmp_path, monkeypatch, capsys):
    (tmp_path / "script.py").write_text(SCRIPT)
    (tmp_path / "sibling.py").write_text("VALUE = 'sibling'\n")
    torch.manual_seed(0)
    expected_draw = torch.rand(1)
    torch.manual_seed(0)
    threads, argv, cwd = torch.get_num_threads(), list(sys.argv), os.getcwd()
    code, output = run_as_main(tmp_path / "script.py", ["--x", "1"], monkeypatch, capsys, env={"GIVEN": "yes"})
    assert code == 3 and "argv ['--x', '1'] sibling yes" in output
    assert torch.is_grad_enabled() and torch.get_num_threads() == threads
    assert torch.get_default_dtype() == torch.float32 and torch.equal(torch.rand(1), expected_draw)
    assert "SCRIPT_SET" not in os.environ and "GIVEN" not in os.environ
    assert sys.argv == argv and os.getcwd() == cwd
