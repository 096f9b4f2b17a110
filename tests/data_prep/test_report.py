"""The report: the funnel per source adds up, a step that takes most of a source is a warning, publish refuses a
report that does not account for every record, and the split files are streamed, never held in memory."""

import json
import shutil
import tracemalloc

import pytest
from dp_helpers import assert_funnel_adds_up
from loguru import logger

from data_prep.cli import main, parse
from data_prep.publish import publish
from data_prep.report import AccountingError, bad_records, count_splits, fingerprint, removed_examples


def test_funnel_per_source_adds_up_on_the_tiny_run(tiny_run):
    report = json.loads((tiny_run / "report.json").read_text())
    assert_funnel_adds_up(report, tiny_run)
    per_source = report["sources_funnel"]
    assert list(per_source) == ["c4", "html", "wikitext", "tang", "songci", "lunyu"]  # config order
    assert per_source["tang"]["steps"]["dedup"]["drops"]["exact_duplicate"]["documents"] > 0
    assert per_source["c4"]["steps"]["boilerplate_lines"]["characters_removed"] > 0
    by_language = report["length_histogram_by_language"]
    assert set(by_language) == {"en", "zh"}
    for bucket, n in report["length_histogram"].items():
        assert n == sum(h.get(bucket, 0) for h in by_language.values())
    assert sum(report["length_histogram"].values()) == report["documents_out"]["train"]
    md = (tiny_run / "report.md").read_text()
    assert "## Funnel per source" in md and "| tang | dedup |" in md


@pytest.fixture(scope="module")
def warned_run(tmp_path_factory, data_dir):
    """A source of pages written as one line each, ending in a list of tags (no full stop at the end: C4's line rule
    removes the only line, so C4 drops every page), beside the real C4 sample at weight 0.3."""
    tmp = tmp_path_factory.mktemp("warn")
    with open(data_dir / "c4_demo" / "c4_demo.jsonl", encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f][:60]
    with open(tmp / "tagged.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"text": " ".join(t.split()) + " Tags: travel, food, city guides"}) + "\n" for t in texts)
    cfg = tmp / "c.yaml"
    cfg.write_text(f"""
sources:
  - {{path: "{tmp}/tagged.jsonl", label: tagged, language: en}}
  - {{path: "${{DATA_DIR}}/c4_demo/c4_demo.jsonl", label: c4, language: en, weight: 0.3}}
steps:
  - {{step: normalize}}
  - {{step: c4_quality}}
tasks: 2
""")
    messages = []
    sink = logger.add(lambda m: messages.append(m.record["message"]), level="WARNING")
    try:
        out = main(["--config", str(cfg), "--output_dir", str(tmp / "out")])
    finally:
        logger.remove(sink)
    return cfg, out, messages


def test_a_step_taking_most_of_a_source_is_a_warning(warned_run):
    _, out, messages = warned_run
    report = json.loads((out / "report.json").read_text())
    assert [(w["source"], w["step"]) for w in report["warnings"]] == [("tagged", "c4_quality")]  # none for c4
    assert report["warnings"][0]["share"] == 1.0
    c4 = report["sources_funnel"]["c4"]
    assert 0 < c4["steps"]["c4_quality"]["characters_dropped"] < c4["characters_read"] / 2
    # The subsample its weight asks for is no warning, though it takes more than half of c4.
    assert c4["steps"]["split"]["drops"]["weight_subsampled"]["characters"] > c4["characters_read"] / 2
    assert_funnel_adds_up(report, out)
    assert "## Warnings\n\n- c4_quality took 100% of the characters of source tagged\n" in (out / "report.md").read_text()
    assert [m for m in messages if "took" in m] == [
        "data_prep: c4_quality took 100% of the characters of source tagged; see the funnel per source in report.md"]


def test_publish_refuses_a_record_neither_in_the_output_nor_dropped(warned_run, tmp_path):
    cfg, out, _ = warned_run
    work = tmp_path / "work"
    shutil.copytree(out.parent / "out_work", work)
    shard = next((work / "splits" / "train").glob("*.jsonl"))
    shard.write_text("".join(shard.read_text().splitlines(keepends=True)[1:]))  # one document lost
    args = parse(["--config", str(cfg), "--output_dir", str(tmp_path / "out"), "--work_dir", str(work)])
    with pytest.raises(AccountingError, match="records read but"):
        publish(args)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))  # no staging folder left behind


def test_split_files_are_streamed_not_held_in_memory(tmp_path):
    (tmp_path / "train").mkdir()
    record = {"text": "word " * 800, "id": "s/f:1", "source": "s", "language": "en", "script": None, "augmented": False}
    with open(tmp_path / "train" / "00000.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps({**record, "id": f"s/f:{i}"}) + "\n" for i in range(5000))
    size = (tmp_path / "train" / "00000.jsonl").stat().st_size  # 20 MB
    tracemalloc.start()
    try:
        counts = count_splits(tmp_path)
        fingerprint(tmp_path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert counts.documents["train"] == 5000 and counts.train_lengths["en"] == {4096: 5000}
    assert peak < size / 4, peak


def test_bad_records_and_duplicate_examples_are_read_with_a_cap(tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "removed").mkdir()
    logged = []
    for task in range(2):
        items = [{"where": f"f.jsonl:{task + 2 * i:06d}", "reason": "invalid_json"} for i in range(800)]
        (tmp_path / "bad" / f"{task:05d}.jsonl").write_text("".join(json.dumps(b) + "\n" for b in items))
        removed = [{"id": f"d{task + 2 * i}", "reason": "near_duplicate", "duplicate_of": "d0",
                    "order": [0, 0, task + 2 * i]} for i in range(15)]  # each task's file in source order, the two files interleaved
        (tmp_path / "removed" / f"{task:05d}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in removed))
        logged += items
    assert bad_records(tmp_path / "bad") == sorted(logged, key=lambda b: b["where"])[:1000]
    assert [r["id"] for r in removed_examples(tmp_path / "removed")] == [f"d{i}" for i in range(20)]
