"""make eval: sliding-window bits per byte (checked against lm-evaluation-harness), verbaliser classification,
generation, the report, and bad input."""

import json
import random

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from llm_recipes.evaluation import scoring as ev
import recipes.eval
from testkit import REPO_ROOT, run_recipe_error

SST2 = {"path": "${DATA_DIR}/sst2/sst2_glue_dev.tsv", "name": "sst2", "language": "en", "text_column": "sentence",
        "label_column": "label", "template": "Review: {text}\nSentiment:",
        "verbalizers": {0: " negative", 1: " positive"}, "demo_pool_size": 16, "max_samples": 24}
CHNSENTI = {"path": "${DATA_DIR}/chnsenticorp/ChnSentiCorp_htl_all.csv", "name": "chnsenticorp", "language": "zh",
            "text_column": "review", "label_column": "label", "template": "评论：{text}\n情感：",
            "verbalizers": {0: "负面", 1: "正面"}, "demo_pool_size": 16, "max_samples": 24}


def write_config(tmp_path, model, **overrides):
    config = {"model_name_or_path": str(model), "output_dir": str(tmp_path / "eval"), "batch_size": 8,
              "context_length": 256, "stride": 128,
              "lm_sets": [{"path": "${DATA_DIR}/wikitext2/test.txt", "language": "en", "max_documents": 8},
                          {"path": "${DATA_DIR}/chinese_poetry/lunyu.json", "text_column": "paragraphs",
                           "language": "zh", "max_documents": 4}],
              "classification_sets": [SST2, CHNSENTI], "shots": [0, 2],
              "prompts_file": str(REPO_ROOT / "configs/eval/prompts.jsonl"), "max_new_tokens": 8,
              "tasks": ["lm", "classification", "generation"], **overrides}
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True))
    return path


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_chat_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_chat_model_dir).eval(), AutoTokenizer.from_pretrained(
        tiny_chat_model_dir)


# --- the scorer -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n, context, stride", [(1, 8, 8), (7, 8, 8), (30, 8, 8), (30, 8, 3), (30, 16, 1), (9, 4, 4)])
def test_rolling_windows_score_every_token_once_within_the_context(n, context, stride):
    tokens = list(range(100, 100 + n))
    windows = ev.rolling_windows(tokens, 1, context, stride)
    scored = []
    for w in windows:
        assert len(w.tokens) - 1 <= context  # the model input
        assert w.start >= 0 and w.start + w.count <= len(w.tokens) - 1
        scored += w.tokens[w.start + 1:w.start + 1 + w.count]
    assert scored == tokens


def test_batched_padded_scores_equal_one_window_at_a_time(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    rng = random.Random(0)
    windows = [w for _ in range(5) for w in
               ev.rolling_windows([rng.randrange(5, 2000) for _ in range(rng.randrange(3, 40))], 1, 16, 5)]
    batched = ev.score_windows(model, windows, batch_size=7, pad_id=tokenizer.pad_token_id, desc="t")
    for w, got in zip(windows, batched):
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([w.tokens[:-1]])).logits[0].float(), -1)
        expected = sum(logp[w.start + i, w.tokens[w.start + i + 1]].item() for i in range(w.count))
        assert got == pytest.approx(expected, abs=1e-4)


def test_a_batch_over_the_logit_budget_is_cut_into_fewer_rows_with_the_same_scores(model_and_tokenizer, monkeypatch):
    """A 128k-152k vocabulary: batch x length x vocabulary fp32 scores would be gigabytes; no forward pass may hold
    more logits than LOGIT_BUDGET (one row at least), and the sums do not change."""
    model, tokenizer = model_and_tokenizer
    rng = random.Random(1)
    windows = [w for _ in range(6) for w in
               ev.rolling_windows([rng.randrange(5, 2000) for _ in range(rng.randrange(3, 40))], 1, 16, 5)]
    whole = ev.score_windows(model, windows, batch_size=8, pad_id=tokenizer.pad_token_id, desc="t")
    shapes, forward = [], model.forward

    def recording(*args, **kwargs):
        out = forward(*args, **kwargs)
        shapes.append(tuple(out.logits.shape))
        return out

    vocab = model.config.vocab_size
    monkeypatch.setattr(ev, "LOGIT_BUDGET", 3 * 17 * vocab)  # 3 rows of the longest window (17 tokens)
    monkeypatch.setattr(model, "forward", recording)
    cut = ev.score_windows(model, windows, batch_size=8, pad_id=tokenizer.pad_token_id, desc="t")
    assert cut == pytest.approx(whole, abs=1e-4)
    assert all(rows * (length + 1) * vocab <= 3 * 17 * vocab for rows, length, _ in shapes)
    assert len(shapes) > -(-len(windows) // 8) and sum(rows for rows, _, _ in shapes) == len(windows)  # cut, all


@pytest.mark.slow  # 2k-token windows over a 128k-152k vocabulary, one row per forward pass: 4-10 s a family
@pytest.mark.parametrize("family, prefix", [("llama3", "<|begin_of_text|>"), ("qwen2", "<|endoftext|>"),
                                            ("llama2-spm", "<s>")])
def test_a_familys_default_eval_fits_and_starts_documents_as_the_family_does(family, prefix, family_model_dir,
                                                                            tmp_path):
    """Default context: the model's maximum (Llama 3.1: 131,072) capped at 2,048; documents after BOS where the
    tokenizer puts one first (Llama), else after eos (Qwen, ours)."""
    config = write_config(tmp_path, family_model_dir(family), context_length=None, stride=256, batch_size=16,
                          tasks=["lm"])
    results = recipes.eval.main(["--config", str(config)])
    assert results["context_length"] == 2048 and results["document_prefix"] == prefix
    assert results["language_modeling"]["en"]["context_length"] == 2048


def test_classification_prompts_take_k_demonstrations_from_the_pool_only(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    texts = ["a fine film", "a dull film", "great acting"]
    pool = [("pool one", 1), ("pool two", 0), ("pool three", 1), ("pool four", 0)]
    verbal = {0: " negative", 1: " positive"}
    preds, prompts = ev.classify(model, tokenizer, texts, "Review: {text}\nSentiment:", verbal, pool, shots=2, seed=3,
                                 context_length=256, batch_size=4)
    assert set(preds) <= {0, 1}
    for text, prompt in zip(texts, prompts):
        assert prompt.endswith(f"Review: {text}\nSentiment:") and prompt.count("Review:") == 3
        assert sum(f"Review: {t}\nSentiment:{verbal[y]}\n\n" in prompt for t, y in pool) == 2
    again = ev.classify(model, tokenizer, texts, "Review: {text}\nSentiment:", verbal, pool, 2, 3, 256, 4)
    assert again[1] == prompts  # seeded draws


def test_metrics_are_the_evaluate_modules_and_the_majority_baseline():
    scores = ev.classification_scores([1, 1, 0, 1], [1, 0, 0, 1], labels=[0, 1])
    assert scores["accuracy"] == 0.75 and scores["confusion_matrix"] == [[1, 1], [0, 2]]
    assert scores["precision_macro"] == pytest.approx((1 + 2 / 3) / 2)
    assert scores["f1_per_class"] == pytest.approx([2 / 3, 0.8])
    assert ev.majority_baseline([1, 0, 1, 1], [0, 1]) == {"predicts": 1, "accuracy": 0.75,
                                                         "f1_macro": pytest.approx((0 + 6 / 7) / 2)}


# --- the recipe -------------------------------------------------------------------------------------------------------


def test_evaluate_writes_results_report_and_pictures(tmp_path, tiny_chat_model_dir):
    results = recipes.eval.main(["--config", str(write_config(tmp_path, tiny_chat_model_dir))])
    out = tmp_path / "eval"
    saved = json.loads((out / "eval_results.json").read_text())
    assert set(saved["language_modeling"]) == {"en", "zh"}
    for lm in saved["language_modeling"].values():
        assert lm["bits_per_byte"] > 0 and lm["perplexity"] > 1 and lm["stride"] == 128
    sst2 = saved["classification"]["sst2"]
    assert sst2["examples"] == 24 and sst2["demo_pool"] == 16 and set(sst2["shots"]) == {"0", "2"}
    assert sum(map(sum, sst2["shots"]["0"]["confusion_matrix"])) == 24
    assert saved["classification"]["chnsenticorp"]["dropped"] == {} or "empty_text" in \
        saved["classification"]["chnsenticorp"]["dropped"]
    generation = saved["generation"]
    assert generation["prompts"] == 32 and set(generation["per_language"]) == {"en", "zh"}
    assert 0 <= generation["stopped_share"] <= 1 and generation["mean_answer_tokens"] <= 8
    assert len((out / "generations.jsonl").read_text().splitlines()) == 32
    for png in ("lm_per_language.png", "confusion_sst2_0shot.png", "confusion_chnsenticorp_2shot.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    report = (out / "eval_report.md").read_text()
    assert "bits/byte" in report and "majority class" in report and "stopped at EOS" in report
    assert (out / "resolved_config.yaml").is_file() and results["kind"] == "model"


def make_adapter(tmp_path, base_dir):
    """A LoRA adapter with non-zero B on the base, and the same adapter merged into a full model folder."""
    from peft import LoraConfig, get_peft_model

    base = AutoModelForCausalLM.from_pretrained(base_dir)
    torch.manual_seed(2)
    model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    model.save_pretrained(tmp_path / "adapter")
    merged = tmp_path / "merged"
    model.merge_and_unload().save_pretrained(merged)
    AutoTokenizer.from_pretrained(base_dir).save_pretrained(merged)
    return tmp_path / "adapter", merged


def test_a_lora_adapter_is_evaluated_on_its_base(tmp_path, tiny_chat_model_dir):
    make_adapter(tmp_path, tiny_chat_model_dir)
    merged = tmp_path / "merged"
    recipe = recipes.eval
    via_adapter = recipe.main(["--config", str(write_config(tmp_path, tmp_path / "adapter", tasks=["lm"]))])
    via_merged = recipe.main(["--config", str(write_config(tmp_path, merged, tasks=["lm"]))])
    assert via_adapter["kind"] == "adapter"
    for name in ("en", "zh"):
        assert via_adapter["language_modeling"][name]["bits_per_byte"] == pytest.approx(
            via_merged["language_modeling"][name]["bits_per_byte"], rel=1e-5)


@pytest.mark.slow
def test_bits_per_byte_equals_lm_evaluation_harness(tmp_path, tiny_chat_model_dir):
    """Our sliding-window scorer with stride == context is lm-eval's rolling log-likelihood: same documents, same
    prefix token, same windows -> the same bits per byte. lm-eval runs as its own program (lm_eval run --model hf)."""
    config = write_config(tmp_path, tiny_chat_model_dir, tasks=["lm", "lm_eval"], context_length=64, stride=64,
                          lm_sets=[{"path": "${DATA_DIR}/wikitext2/test.txt", "name": "wikitext", "max_documents": 12}],
                          lm_eval_tasks=["llmr_wikitext", "llmr_sst2"], lm_eval_limit=12)
    results = recipes.eval.main(["--config", str(config)])
    ours = results["language_modeling"]["wikitext"]["bits_per_byte"]
    theirs = results["lm_eval"]["results"]["llmr_wikitext"]["bits_per_byte"]
    assert ours == pytest.approx(theirs, rel=1e-6)
    assert 0 <= results["lm_eval"]["results"]["llmr_sst2"]["acc"] <= 1
    assert results["lm_eval"]["command"].startswith("lm_eval run --model hf")
    # a smaller stride gives every token more context: a different (here: the scorer must notice) number
    shorter = recipes.eval.main(["--config", str(config), "--stride", "16", "--tasks", "lm"])
    assert shorter["language_modeling"]["wikitext"]["bits_per_byte"] != pytest.approx(theirs, rel=1e-6)


@pytest.mark.slow
def test_lm_eval_runs_an_adapter_through_peft(tmp_path, tiny_chat_model_dir):
    adapter, _ = make_adapter(tmp_path, tiny_chat_model_dir)
    config = write_config(tmp_path, adapter, tasks=["lm", "lm_eval"], context_length=64, stride=64,
                          lm_sets=[{"path": "${DATA_DIR}/wikitext2/test.txt", "name": "wikitext", "max_documents": 4}],
                          lm_eval_tasks=["llmr_wikitext"], lm_eval_limit=4)
    results = recipes.eval.main(["--config", str(config)])
    assert "peft=" in results["lm_eval"]["command"]
    assert results["language_modeling"]["wikitext"]["bits_per_byte"] == pytest.approx(
        results["lm_eval"]["results"]["llmr_wikitext"]["bits_per_byte"], rel=1e-5)


# --- bad input --------------------------------------------------------------------------------------------------------


def bad_run(tmp_path, model, capsys, **overrides):
    err = run_recipe_error("eval", ["--config", str(write_config(tmp_path, model, **overrides))], capsys)
    assert not (tmp_path / "eval").exists()
    return err


def test_missing_label_column(tmp_path, tiny_chat_model_dir, capsys):
    err = bad_run(tmp_path, tiny_chat_model_dir, capsys, tasks=["classification"],
                  classification_sets=[{**SST2, "label_column": "sentiment"}])
    assert "sst2_glue_dev.tsv" in err and "'sentiment'" in err and "label_column" in err


def test_eval_set_in_the_wrong_language_for_its_template(tmp_path, tiny_chat_model_dir, capsys):
    err = bad_run(tmp_path, tiny_chat_model_dir, capsys, tasks=["classification"],
                  classification_sets=[{**CHNSENTI, "language": "en", "template": "Review: {text}\nSentiment:"}])
    assert "ChnSentiCorp_htl_all.csv" in err and "language en" in err


def test_empty_prompt_file(tmp_path, tiny_chat_model_dir, capsys):
    empty = tmp_path / "prompts.jsonl"
    empty.write_text("\n\n")
    err = bad_run(tmp_path, tiny_chat_model_dir, capsys, tasks=["generation"], prompts_file=str(empty))
    assert "no prompt" in err and "prompts.jsonl" in err


def test_folder_that_is_not_a_model(tmp_path, capsys):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("hello")
    err = bad_run(tmp_path, tmp_path / "notes", capsys)
    assert "not a model" in err
