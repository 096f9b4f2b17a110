"""Helpers for the data_prep tests: real shipped data, steps run on single documents or through their run loop."""

import json

import pytest
from testkit import built_once


@pytest.fixture(scope="session")
def c4_texts(data_dir) -> list[str]:
    with open(data_dir / "c4_demo" / "c4_demo.jsonl", encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f]


@pytest.fixture(scope="session")
def tang_poems(data_dir) -> list[str]:
    poems = json.loads((data_dir / "chinese_poetry" / "poet.tang.0.json").read_text(encoding="utf-8"))
    return ["\n".join(p["paragraphs"]) for p in poems]


@pytest.fixture(scope="session")
def song_ci(data_dir) -> list[str]:
    poems = json.loads((data_dir / "chinese_poetry" / "ci.song.0.json").read_text(encoding="utf-8"))
    return ["\n".join(p["paragraphs"]) for p in poems]


@pytest.fixture(scope="session")
def tiny_run(repo_root, data_dir):
    """`make data` on configs/data/tiny.yaml, built once (testkit.built_once)."""
    from dp_helpers import run

    def build(out):
        run(repo_root, out / "tiny")

    return built_once("data-tiny", build, inputs=["data_prep", "configs/data/tiny.yaml", data_dir]) / "tiny"
