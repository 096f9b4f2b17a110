import re
import subprocess

import pytest


def makefile_targets(repo_root):
    text = (repo_root / "Makefile").read_text()
    return {m.group(1) for m in re.finditer(r"^([a-z][a-z0-9-]*):(?!=)", text, re.M)}


def test_help_lists_every_target(repo_root):
    out = subprocess.run(["make", "-s", "help"], cwd=repo_root, capture_output=True, text=True, check=True).stdout
    listed = {line.split()[0] for line in out.splitlines()[1:] if line.strip()}
    targets = makefile_targets(repo_root)
    assert {"install", "test", "test-fast", "demo", "clean", "help"} <= targets
    assert targets == listed


@pytest.mark.parametrize("command", ["make demo", "make test"])
def test_readme_gives_the_two_setup_commands(repo_root, command):
    assert command in (repo_root / "README.md").read_text()


def test_ci_runs_the_readme_test_command(repo_root):
    ci = (repo_root / ".ci" / "run").read_text()
    assert re.search(r"^make test\b", ci, re.M)
