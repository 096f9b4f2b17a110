"""testkit.built_once, which the expensive fixtures rely on: built once per inputs' hash, rebuilt when an input changes,
never reused half-built."""

import testkit
from testkit import BUILT_MARKER, built_once


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
