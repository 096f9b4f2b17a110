"""make report: every section filled from a run folder's files, a missing file turns its section into one line, runs
side by side (a column and a curve colour per run), P/R/F1 from a confusion matrix, and the same page twice."""

import json
import shutil

import pytest
import yaml
from sklearn.metrics import f1_score, precision_score, recall_score
from torch.utils.tensorboard import SummaryWriter

import recipes.report
from llm_recipes.reporting import plots
from llm_recipes.reporting.sections import scores, scores_from_confusion
from testkit import run_recipe_error

# The shapes of a demo run's files (outputs/<run>/...), small.
DATA_REPORT = {
    "records_read": 30, "documents_out": {"train": 18, "validation": 1, "test": 1},
    "funnel": [
        {"stage": "documents", "step": "read", "docs_in": 30, "docs_out": 30, "chars_out": 9000, "dropped": 0,
         "drops": {}},
        {"stage": "documents", "step": "gopher_quality", "docs_in": 30, "docs_out": 24, "chars_out": 8000,
         "dropped": 6, "drops": {"gopher_short_doc": 6}},
        {"stage": "output", "step": "dedup", "docs_in": 24, "docs_out": 20, "chars_out": 7000, "dropped": 4,
         "drops": {"exact_duplicate": 4}},
        {"stage": "output", "step": "split", "docs_in": 20, "docs_out": 22, "chars_out": 7300, "dropped": 0,
         "drops": {}, "counts": {"docs_out_train": 20, "docs_out_test": 2, "weight_repeats": 2}}],
    "sources_funnel": {
        "c4": {"records_read": 20, "characters_read": 6000, "documents_out": 14, "characters_out": 4500, "steps": {
            "gopher_quality": {"documents_dropped": 6, "characters_dropped": 1500, "characters_removed": 0,
                               "drops": {"gopher_short_doc": {"documents": 6, "characters": 1500}}}}},
        "tang": {"records_read": 10, "characters_read": 3000, "documents_out": 6, "characters_out": 2500, "steps": {
            "dedup": {"documents_dropped": 4, "characters_dropped": 500, "characters_removed": 0,
                      "drops": {"exact_duplicate": {"documents": 4, "characters": 500}}}}}},
}
TOKENIZER_REPORT = {"vocab_size": 4096, "vocab_used": 3067, "by_language": {
    "en": {"documents": 23, "characters": 37708, "bytes": 37859, "tokens": 12185, "chars_per_token": 3.095,
           "bytes_per_token": 3.107},
    "zh": {"documents": 96, "characters": 6770, "bytes": 19313, "tokens": 7011, "chars_per_token": 0.966,
           "bytes_per_token": 2.755}}}
PACKED = {"splits": {split: {"documents": n, "tokens": n * 100, "blocks": n, "block_size": 128,
                             "dropped_tail_tokens": 7, "real_token_share": 1.0} for split, n in (("train", 21),
                                                                                                ("validation", 3))}}
EVAL = {
    "model": "outputs/x/sft", "kind": "model", "context_length": 1024,
    "language_modeling": {"en": {"language": "en", "documents": 27, "tokens": 14286, "perplexity": 376.42,
                                 "bits_per_byte": 2.6514, "bytes_per_token": 3.2269}},
    "classification": {"sst2": {"dataset_name": "SST-2", "language": "en", "labels": {"0": " negative", "1": " positive"},
                                "majority_baseline": {"predicts": 1, "accuracy": 0.5267, "f1_macro": 0.345},
                                "shots": {"0": {"accuracy": 0.5267, "precision_macro": 0.2633, "recall_macro": 0.5,
                                                "f1_macro": 0.345, "confusion_matrix": [[0, 142], [0, 158]]}}}},
    "generation": {"per_language": {"en": {"prompts": 2, "stopped_share": 0.5, "mean_answer_tokens": 12.5}}},
}
# the classifier's test split carries only its confusion matrix: the report computes accuracy, P, R and F1
CLASSIFY = {"labels": ["negative", "positive"],
            "validation": {"accuracy": 0.75, "precision_macro": 0.8, "recall_macro": 0.7, "f1_macro": 0.72,
                           "confusion_matrix": [[3, 1], [1, 3]], "majority_baseline": {"accuracy": 0.5}},
            "test": {"confusion_matrix": [[8, 2], [4, 6]]}}
GENERATIONS = [{"prompt": "Who are you?", "answer": "A tiny <model> | here", "answer_tokens": 5, "stopped_at_eos": True,
                "language": "en"},
               {"prompt": "Name a colour.", "answer": "blue\nand red", "answer_tokens": 4, "stopped_at_eos": False,
                "language": "en"}]
SAMPLE = {"prompt": "Who are you?", "rendered_prompt": "...", "completion": "A model.<|im_end|>", "new_tokens": 4,
          "stopped_at": "<|im_end|>"}
PIPELINE = {"run_dir": "outputs/tiny", "stages": [
    {"name": "pretrain", "command": "python recipes/pretrain.py", "status": "ran", "seconds": 61.5},
    {"name": "export", "command": "python recipes/export.py", "status": "skipped", "seconds": 0.0, "ran_seconds": 9.0}]}


def write_events(folder, stamp, points, start=0.0):
    """TensorBoard scalars as the Trainer writes them (torch's SummaryWriter): {tag: [(step, value)]}."""
    writer = SummaryWriter(str(folder / "runs" / stamp))
    for tag, values in points.items():
        for step, value in values:
            writer.add_scalar(tag, value, step, walltime=start + step)
    writer.close()


def curves(loss, extra=None):
    return {"train/loss": [(10, loss), (20, loss - 1)], "train/learning_rate": [(10, 1e-3), (20, 5e-4)],
            "train/grad_norm": [(10, 2.0), (20, 1.0)], "eval/loss": [(0, loss + 1), (20, loss - 0.5)],
            "train/tokens_per_second": [(10, 100.0), (20, 300.0), (30, 200.0)], "train/train_runtime": [(20, 12.5)],
            **(extra or {})}


def make_run(root, name="tiny", perplexity=376.42):
    run = root / name
    files = {"data/report.json": DATA_REPORT, "tokenizer/tokenizer_report.json": TOKENIZER_REPORT,
             "packed/stats.json": PACKED, "eval/eval_results.json": {**EVAL, "language_modeling": {
                 "en": {**EVAL["language_modeling"]["en"], "perplexity": perplexity}}},
             "classify/eval_results.json": CLASSIFY, "sft-lora/sample_generation.json": SAMPLE,
             "pipeline.json": PIPELINE}
    for rel, content in files.items():
        (run / rel).parent.mkdir(parents=True, exist_ok=True)
        (run / rel).write_text(json.dumps(content, ensure_ascii=False))
    (run / "eval/generations.jsonl").write_text("".join(json.dumps(g) + "\n" for g in GENERATIONS))
    for stage in ("tokenizer", "pretrain", "sft-lora", "dpo", "classify", "eval"):
        (run / stage).mkdir(exist_ok=True)
        (run / stage / "resolved_config.yaml").write_text(yaml.safe_dump({"stage": stage, "seed": 42}))
    write_events(run / "pretrain", "a", curves(8.0))
    # a resumed pretraining run logs step 20 again: the later write is the one that counts
    write_events(run / "pretrain", "b", {"train/loss": [(20, 6.5)]}, start=1000.0)
    write_events(run / "sft-lora", "a", curves(4.0, {"train/real_token_share": [(10, 0.5), (20, 0.7)]}))
    write_events(run / "dpo", "a", curves(0.7, {"train/rewards/margins": [(10, 0.1), (20, 0.4)],
                                                "eval/rewards/accuracies": [(0, 0.5), (20, 0.625)]}))
    write_events(run / "classify", "a", curves(0.69))
    return run


@pytest.fixture
def run_folder(tmp_path):
    return make_run(tmp_path)


def report(*argv) -> str:
    return recipes.report.main(list(map(str, argv))).read_text()


def test_every_section_is_filled_from_the_run_folder(run_folder):
    md = report("--runs", run_folder)
    assert (run_folder / "report" / "report.md").is_file()
    # as `make demo` leaves it: sft-lora trained, sft is its merged model (no events of its own), nothing missing
    assert md.count("| filled |") == 7 and "not in this run" not in md, md[:1500]
    # 1. funnel per source and per step
    assert "| c4 | 20 | 14 | 6,000 | 4,500 | 75.0% | gopher_quality (6) |" in md
    assert "| output/dedup | 20 | 4 | exact_duplicate 4 | - |" in md
    assert "| output/split | 22 | 0 | - | docs_out_train 20, docs_out_test 2, weight_repeats 2 |" in md  # 20 in, 22 out
    # 2. tokenizer and packing
    assert "| vocabulary | 4,096 | 3,067 | 74.9% |" in md and "| zh | 96 | 7,011 | 0.966 | 2.755 |" in md
    assert "| validation | 3 | 300 | 3 | 128 | 7 | 1 |" in md
    # 3. curves: the resumed run's step 20 wins; DPO's rewards; a PNG per stage
    assert "| pretrain | 20 | 6.5 | 7.5 | 7.5 |" in md
    assert "| dpo | 20 | -0.3 | 0.2 | 0.2 | 0.625 |" in md
    for stage in ("pretrain", "sft-lora", "dpo", "classify"):
        assert f"![{stage} curves](curves_{stage}.png)" in md and (run_folder / f"report/curves_{stage}.png").is_file()
    # 4. throughput (median of the logged tokens/s) and the pipeline's wall times
    assert "| sft-lora | 200 | 0.6 | n/a | 12.5 |" in md
    assert "| pretrain | ran | 61.5 | 61.5 |" in md and "| export | skipped | 0 | 9 |" in md
    # 5. evaluation, with the classifier's test scores computed from its confusion matrix
    assert "| en | en | 376.4 | 2.651 | 3.227 | 14,286 |" in md
    assert "| sst2 0-shot | 0.5267 | 0.2633 | 0.5 | 0.345 | 0.5267 |" in md
    assert "| test | 0.7 | 0.7083 | 0.7 | 0.697 | n/a |" in md
    for png in ("confusion_tiny_sst2_0shot.png", "confusion_tiny_classify_test.png"):
        assert f"({png})" in md and (run_folder / "report" / png).is_file()
    # 6. generations, escaped for a table cell
    assert "| 1. Who are you? | en | A tiny &lt;model&gt; \\| here | yes |" in md
    assert "| 2. Name a colour. | en | blue<br>and red | no |" in md
    assert "| sft-lora | Who are you? | A model.&lt;\\|im_end\\|&gt; | &lt;\\|im_end\\|&gt; |" in md
    # 7. every stage's resolved config, folded, in pipeline order
    summaries = [line for line in md.splitlines() if line.startswith("<details>")]
    assert [s.split("<code>")[1].split("/")[0] for s in summaries] == ["tokenizer", "pretrain", "sft-lora", "dpo",
                                                                        "classify", "eval"]
    assert "seed: 42" in md


# file or folder removed -> the line its section shows instead (each independent of the others, so one report)
MISSING = {"data/report.json": "_not in this run (data/report.json missing)_",
           "packed/stats.json": "_not in this run (packed/stats.json missing)_",
           "dpo/runs": "_not in this run: dpo (<stage>/runs/*/events.out.tfevents.* missing)_",
           "pipeline.json": "_not in this run (pipeline.json missing)_",
           "classify/eval_results.json": "_not in this run (classify/eval_results.json missing)_",
           "eval/generations.jsonl": "_not in this run (eval/generations.jsonl missing)_"}


def test_a_missing_file_leaves_one_line_in_its_section(run_folder):
    for rel in MISSING:
        target = run_folder / rel
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    md = report("--runs", run_folder)
    for rel, line in MISSING.items():
        assert line in md, rel
    # the sections that kept some of their files stay filled
    assert md.count("| not in this run |") == 1 and "| 1. [Data funnel](#1-data-funnel) | not in this run |" in md
    assert "![dpo curves]" not in md and "| classify | 200 |" in md


def test_a_run_without_any_stage_output_reports_every_section_missing(tmp_path):
    run = tmp_path / "empty"
    (run / "tokenizer").mkdir(parents=True)
    (run / "tokenizer" / "resolved_config.yaml").write_text("vocab_size: 64\n")
    md = report("--runs", run)
    assert md.count("| not in this run |") == 6  # all but the resolved configs


def test_two_runs_side_by_side(tmp_path, monkeypatch):
    a, b = make_run(tmp_path, "a"), make_run(tmp_path, "b", perplexity=400.0)
    (b / "packed/stats.json").unlink()
    drawn = {}

    def keep(fig, path):  # the figures as drawn, to look at their lines
        drawn[path.name] = [[(line.get_label(), line.get_color()) for line in ax.get_lines()] for ax in fig.axes]
        real_save(fig, path)

    real_save = plots._save
    monkeypatch.setattr(plots, "_save", keep)
    md = report("--runs", a, b, "--outputs_root", tmp_path)
    out = tmp_path / "report-a-vs-b"
    assert (out / "report.md").read_text() == md and not (a / "report").exists()
    assert "| section | `a` | `b` |" in md and md.count("| filled | filled |") == 7
    assert "| en | perplexity | 376.4 | 400 |" in md
    assert "| test | F1 (macro) | 0.697 | 0.697 |" in md
    # a run that lacks a file: its column says so, the other keeps its values
    assert "_not in run `b` (packed/stats.json missing)_" in md and "| train | tokens | 2,100 | n/a |" in md
    loss_panel = drawn["curves_pretrain.png"][0]
    assert [label for label, _ in loss_panel] == ["a train", "a eval", "b train", "b eval"]
    assert loss_panel[0][1] == loss_panel[1][1] != loss_panel[2][1]  # one colour per run
    assert (out / "curves_pretrain.png").is_file() and (out / "data_funnel.png").is_file()
    assert "(confusion_a_sst2_0shot.png)" in md and "(confusion_b_sst2_0shot.png)" in md


@pytest.mark.parametrize("matrix", [[[0, 142], [0, 158]], [[8, 2], [4, 6]], [[5, 1, 0], [2, 0, 3], [0, 0, 4]]])
def test_precision_recall_f1_from_a_confusion_matrix_match_sklearn(matrix):
    truth = [i for i, row in enumerate(matrix) for j, n in enumerate(row) for _ in range(n)]
    predicted = [j for i, row in enumerate(matrix) for j, n in enumerate(row) for _ in range(n)]
    got = scores_from_confusion(matrix)
    kw = {"average": "macro", "zero_division": 0, "labels": list(range(len(matrix)))}
    assert got["precision_macro"] == pytest.approx(precision_score(truth, predicted, **kw))
    assert got["recall_macro"] == pytest.approx(recall_score(truth, predicted, **kw))
    assert got["f1_macro"] == pytest.approx(f1_score(truth, predicted, **kw))
    assert got["accuracy"] == pytest.approx(sum(t == p for t, p in zip(truth, predicted)) / len(truth))


def test_scores_in_the_results_win_over_the_computed_ones():
    result = {"confusion_matrix": [[8, 2], [4, 6]], "recall_macro": 0.123}
    assert scores(result)["recall (macro)"] == 0.123 and scores(result)["precision (macro)"] == pytest.approx(17 / 24)


def test_the_same_run_folder_gives_the_same_report(run_folder):
    first = report("--runs", run_folder)
    pngs = {p.name: p.read_bytes() for p in (run_folder / "report").glob("*.png")}
    # the second report runs with the first one in the run folder: it must not read itself
    assert report("--runs", run_folder) == first
    assert {p.name: p.read_bytes() for p in (run_folder / "report").glob("*.png")} == pngs
    assert "<code>report/" not in first


def test_bad_run_folders_are_one_line_and_write_nothing(run_folder, tmp_path, capsys):
    err = run_recipe_error("report", ["--runs", str(run_folder / "eval")], capsys)
    assert "is not a run folder" in err and not (run_folder / "eval" / "report").exists()
    (run_folder / "data" / "report.json").write_text('{"records_read": ')
    err = run_recipe_error("report", ["--runs", str(run_folder)], capsys)
    assert "data/report.json: not valid JSON" in err
    assert not (run_folder / "report").exists() and not list(run_folder.glob(".report*"))
