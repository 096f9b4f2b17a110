"""`python -m data_prep` end to end on the shipped corpora: splits, report, determinism, reruns, bad input."""

import json
from pathlib import Path

import pytest

from dp_helpers import TINY, assert_funnel_adds_up, records, run, split_hashes

from data_prep.cli import main

def test_make_data_writes_clean_splits_and_report(tiny_run, repo_root):
    out = tiny_run
    report = json.loads((out / "report.json").read_text())
    assert report["all_records_accounted"]
    for split in ("train", "validation", "test"):
        assert report["documents_out"][split] > 50
        assert set(report["languages"][split]) == {"en", "zh"}
    for name in ("report.md", "length_histogram.png", "resolved_config.yaml", "run_info.json"):
        assert (out / name).stat().st_size > 0
    steps = [row["step"] for row in report["funnel"]]
    assert steps[:3] == ["read", "extract_html", "fix_unicode"] and steps[-2:] == ["dedup", "split"]
    dropped = {k.split(":")[0] for k in report["drops_by_rule"]}
    assert {"language_id", "gopher_quality", "gopher_repetition", "c4_quality", "dedup"} <= dropped
    train = records(out, "train")
    assert not any("壯" in r["text"] or "綺" in r["text"] for r in train)  # Tang poems converted to simplified
    assert any(r["source"] == "html" for r in train)
    ids = [r["id"] for s in ("train", "validation", "test") for r in records(out, s)]
    assert len(ids) == len(set(ids))
    # write_dropped: every dropped document is written aside with its step and reason.
    aside = [json.loads(line) for p in (out / "dropped").glob("*/*.jsonl") for line in p.read_text().splitlines()]
    assert len(aside) == sum(r["dropped"] for r in report["funnel"])
    assert {(d["metadata"]["drop_step"], d["metadata"]["drop_reason"]) for d in aside} >= {
        ("language_id", "language_not_kept"), ("gopher_quality", "gopher_short_doc"), ("dedup", "exact_duplicate")}
    # lunyu has weight 2: its train documents appear twice, its validation/test documents once.
    lunyu = [r["id"] for r in train if r["source"] == "lunyu"]
    assert sum(i.endswith("#rep1") for i in lunyu) == len(lunyu) // 2


def test_output_reads_as_corpus_sources(tiny_run):
    """The tokenizer and pack recipes point CorpusArguments at the split folders as they are."""
    from llm_recipes.corpus import CorpusArguments, load_corpus

    args = CorpusArguments(train_sources=[str(tiny_run / "train")], validation_sources=[str(tiny_run / "validation")])
    splits, stats = load_corpus(args)
    report = json.loads((tiny_run / "report.json").read_text())
    assert len(splits["train"]) == report["documents_out"]["train"]
    assert len(splits["validation"]) == report["documents_out"]["validation"]
    assert stats["train"].empty_documents_skipped == 0


def test_same_input_same_output_and_rerun_skips_completed_tasks(tiny_run, repo_root, tmp_path):
    out = run(repo_root, tmp_path / "again")
    assert split_hashes(out) == split_hashes(tiny_run) and len(split_hashes(out)) >= 6
    first = json.loads((tiny_run / "report.json").read_text())
    assert json.loads((out / "report.json").read_text()) == first
    assert len(first["fingerprint"]) == 64
    stats = sorted((tmp_path / "again_work" / "logs").rglob("stats/*.json"))
    mtimes = [p.stat().st_mtime_ns for p in stats]
    run(repo_root, tmp_path / "again")
    assert [p.stat().st_mtime_ns for p in stats] == mtimes  # no task ran twice
    assert split_hashes(tmp_path / "again") == split_hashes(tiny_run)


def test_bad_records_are_counted_with_file_and_line(repo_root, tmp_path, data_dir):
    src = tmp_path / "src"
    src.mkdir()
    good = (data_dir / "c4_demo" / "c4_demo.jsonl").read_text(encoding="utf-8").splitlines()[:20]
    lines = [good[0].encode(), b'{"text": "broken', good[1].encode(), b'{"text": "caf\xe9 au lait"}',
             b'{"text": "   "}', b'{"body": "no text column"}', b"[1, 2]", *[g.encode() for g in good[2:]]]
    (src / "web.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    (src / "notes.txt").write_bytes("First line of notes.\n".encode() + b"\xff\xfe bad bytes\n" + b"Last line.\n")
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(f"""
sources:
  - {{path: "{src}/web.jsonl", label: web, language: en}}
  - {{path: "{src}/notes.txt", label: notes, language: en}}
steps:
  - {{step: normalize}}
  - {{step: gopher_quality}}
  - {{step: dedup_exact}}
tasks: 2
""")
    out = main(["--config", str(cfg), "--output_dir", str(tmp_path / "out")])
    report = json.loads((out / "report.json").read_text())
    bad = {(b["where"].rsplit("/", 1)[-1], b["reason"]) for b in report["bad_records"]}
    assert bad == {("web.jsonl:2", "invalid_json"), ("web.jsonl:4", "not_utf8"), ("web.jsonl:5", "empty_document"),
                   ("web.jsonl:6", "missing_text_column"), ("web.jsonl:7", "missing_text_column"),
                   ("notes.txt:2", "not_utf8")}
    read = report["funnel"][0]
    assert read["docs_in"] == 25 + 3 and read["dropped"] == 6
    assert report["records_read"] == sum(report["documents_out"].values()) + sum(r["dropped"] for r in report["funnel"])
    per_source = report["sources_funnel"]
    assert per_source["web"]["steps"]["read"]["documents_dropped"] == 5
    assert per_source["notes"]["steps"]["read"]["drops"] == {"not_utf8": {"documents": 1, "characters": 0}}
    assert_funnel_adds_up(report, out)


def _fail(capsys, argv) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


def test_config_mistakes_stop_before_any_work(tmp_path, capsys):
    def cfg(body: str) -> str:
        path = tmp_path / "c.yaml"
        path.write_text(body)
        return str(path)

    base = 'sources: [{path: "${DATA_DIR}/c4_demo/c4_demo.jsonl"}]\n'
    err = _fail(capsys, ["--config", cfg('sources: [{path: "/nonexistent/corpus.jsonl"}]\n')])
    assert "c.yaml" in err and "source not found: /nonexistent/corpus.jsonl" in err
    err = _fail(capsys, ["--config", cfg(base + "steps: [{step: gopher_qualty}]\n")])
    assert "unknown step 'gopher_qualty' (did you mean 'gopher_quality'?)" in err
    err = _fail(capsys, ["--config", cfg(base + "steps: [{step: pii, emails: true, phone: false}]\n")])
    assert "unknown parameter 'phone' (did you mean 'phones'?)" in err
    err = _fail(capsys, ["--config", cfg(base + "steps: [{step: c4_quality, min_num_sentences: many}]\n")])
    assert "parameter 'min_num_sentences' has value 'many'" in err
    err = _fail(capsys, ["--config", cfg(base + "steps: [{step: dedup_exact}, {step: pii}]\n")])
    assert "per-document steps come first" in err
    err = _fail(capsys, ["--config", cfg(base + "steps: [{step: gopher_quality}]\n")])
    assert "no language_id step labels the documents" in err
    err = _fail(capsys, ["--config", cfg(base + "executer: ray\n")])
    assert "unknown key 'executer' (did you mean 'executor'?)" in err
    err = _fail(capsys, ["--config", cfg(base + "executor: spark\n")])
    assert "executor" in err
    assert not (tmp_path / "outputs").exists()


def test_failed_run_leaves_previous_output_untouched(repo_root, tmp_path, data_dir):
    cfg = tmp_path / "c.yaml"
    cfg.write_text('sources: [{path: "${DATA_DIR}/c4_demo/c4_demo.jsonl", language: en}]\nsteps: [{step: gopher_quality}]\n')
    out = main(["--config", str(cfg), "--output_dir", str(tmp_path / "out")])
    before = split_hashes(out)
    broken = tmp_path / "broken.json"
    broken.write_text('[{"text": "a"}, {"text": ')  # a JSON array cut short: datasets cannot read it
    cfg.write_text(f'sources: [{{path: "{broken}"}}]\n')
    with pytest.raises(Exception):
        main(["--config", str(cfg), "--output_dir", str(tmp_path / "out")])
    assert split_hashes(tmp_path / "out") == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no staging folder left behind


def test_augmentation_only_touches_train(repo_root, tmp_path, tiny_run):
    tiny = (repo_root / TINY).read_text()
    cfg = tiny.replace("{step: augment, enabled: false", "{step: augment, enabled: true")
    assert cfg != tiny
    path = tmp_path / "aug.yaml"
    path.write_text(cfg)
    out = main(["--config", str(path), "--output_dir", str(tmp_path / "aug")])
    for split in ("validation", "test"):
        assert records(out, split) == records(tiny_run, split)
        assert not any(r["augmented"] for r in records(out, split))
    train, plain = records(out, "train"), records(tiny_run, "train")
    augmented = [r for r in train if r["augmented"]]
    assert len(augmented) == len(plain) and all("#aug0" in r["id"] for r in augmented)
    assert [r for r in train if not r["augmented"]] == plain
    assert sum(a["text"] != p["text"] for a, p in zip(augmented, plain)) > 0.9 * len(plain)


def test_every_key_and_step_parameter_has_help(capsys):
    import dataclasses

    from data_prep.config import DataPrepArguments
    from data_prep.steps import STEPS

    missing = [f.name for f in dataclasses.fields(DataPrepArguments) if f.init and not f.metadata.get("help")]
    for name, cls in STEPS.items():
        missing += [f"{name}.{f.name}" for f in dataclasses.fields(cls.Params) if not f.metadata.get("help")]
    assert not missing
    with pytest.raises(SystemExit) as exc:
        main(["--list_steps"])
    assert exc.value.code == 0
    listing = capsys.readouterr().out
    assert all(f"{name}:" in listing for name in STEPS) and "min_doc_words = 50" in listing


@pytest.mark.slow  # three `make data` runs of several tasks each: ~35 s on 2 cores
def test_result_does_not_depend_on_the_number_of_tasks(tmp_path):
    """Files are dealt to tasks when there are enough of them, records otherwise; splits are decided by text hash
    and duplicates by source order, so 1 task and 3 tasks give the same documents in the same splits."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text("""
sources:
  - {path: "${DATA_DIR}/c4_demo/c4_demo.jsonl", label: c4}
  - {path: "${DATA_DIR}/trafilatura_html/cache", label: html}
  - {path: "${DATA_DIR}/chinese_poetry/poet.tang.0.json", text_column: paragraphs, label: tang}
steps:
  - {step: extract_html}
  - {step: normalize}
  - {step: opencc}
  - {step: language_id}
  - {step: gopher_quality}
  - {step: zh_quality, min_chars: 20, short_line_chars: 4}
  - {step: dedup_exact}
  - {step: dedup_minhash}
""")

    def run_with(tasks: int, dedup_tasks: int = 1) -> Path:
        return main(["--config", str(cfg), "--output_dir", str(tmp_path / f"t{tasks}_{dedup_tasks}"),
                     "--tasks", str(tasks), "--dedup_tasks", str(dedup_tasks)])

    def lines(out: Path) -> dict[str, list[bytes]]:  # each split's records, byte for byte, whichever shard holds them
        return {s: sorted(line for p in (out / s).glob("*.jsonl") for line in p.read_bytes().splitlines())
                for s in ("train", "validation", "test")}

    one, two, four = run_with(1), run_with(2), run_with(4)
    assert lines(one) == lines(two) == lines(four) and len(lines(one)["train"]) > 500
    assert len(list((four / "train").glob("*.jsonl"))) == 4
    # The bucket stage's task count changes only who merges which bucket: the very same shard files.
    assert split_hashes(run_with(2, dedup_tasks=4)) == split_hashes(two)
    reports = [json.loads((out / "report.json").read_text()) for out in (one, four)]
    for report in reports:  # the only differences: the task count, and so the shard files the fingerprint hashes
        assert report.pop("config")["tasks"] in (1, 4) and report.pop("fingerprint")
    assert reports[0] == reports[1]
