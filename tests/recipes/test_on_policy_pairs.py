"""recipes/on_policy_pairs.py: the reference answer is `chosen`, the model's own greedy answer (through its chat
template, cut at its stop tokens) is `rejected`, every conversation is accounted for, and DPO reads the file."""

import json

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

import recipes.on_policy_pairs
from llm_recipes.chat_data import PREFERENCE, ChatDataArguments, load_mixture
from testkit import REPO_ROOT, greedy_ids, run_recipe_error

SEEDS_EN = "stanford_alpaca/seed_tasks.jsonl"
SEEDS_ZH = "belle_zh_seed_tasks/zh_seed_tasks.jsonl"


def pairs_args(model_dir, data_dir, out, *extra):
    sources = [json.dumps({"path": str(data_dir / p), "format": "self_instruct", "max_samples": 30})
               for p in (SEEDS_EN, SEEDS_ZH)]
    return ["--config", str(REPO_ROOT / "configs/pairs/tiny.yaml"), "--model_name_or_path", str(model_dir),
            "--output_dir", str(out), "--datasets", *sources, "--max_new_tokens", "12",
            "--batch_size", "8", *extra]


@pytest.fixture(scope="module")
def pairs_run(tiny_chat_model_dir, data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("pairs") / "pairs"
    report = recipes.on_policy_pairs.main(pairs_args(tiny_chat_model_dir, data_dir, out))
    rows = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    return out, report, rows


def test_chosen_is_the_reference_and_rejected_is_the_models_own_greedy_answer(pairs_run, tiny_chat_model_dir):
    out, report, rows = pairs_run
    assert len(rows) == report["pairs"] > 10
    tokenizer = AutoTokenizer.from_pretrained(tiny_chat_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_chat_model_dir).eval()
    stops = model.generation_config.eos_token_id
    for row in rows[:6]:  # one prompt at a time, no padding: the batched, left-padded answers must be the same
        assert row["prompt"][-1]["role"] == "user" and [m["role"] for m in row["chosen"]] == ["assistant"]
        new = greedy_ids(model, tokenizer, row["prompt"], 12)
        new = new[:next((i for i, t in enumerate(new) if t in stops), len(new))]
        assert row["rejected"] == [{"role": "assistant", "content": tokenizer.decode(new, skip_special_tokens=True)}]


def test_chosen_is_the_sft_mixtures_answer_and_every_conversation_is_counted(pairs_run, data_dir):
    out, report, rows = pairs_run
    mixture, _ = load_mixture(ChatDataArguments(datasets=[{"path": str(data_dir / p), "format": "self_instruct"}
                                                          for p in (SEEDS_EN, SEEDS_ZH)], test_split_size=0), 0)
    answers = {(r["source"], r["record_index"], r["messages"][0]["content"]): r["messages"] for r in mixture["train"]}
    for row in rows:
        messages = answers[(row["sft_source"], row["sft_record_index"], row["prompt"][0]["content"])]
        assert row["prompt"] + row["chosen"] == messages
    assert {s["source"].split("/")[-1] for s in report["sources"]} == {"seed_tasks.jsonl", "zh_seed_tasks.jsonl"}
    for s in report["sources"]:  # nothing lost: each conversation is too long, or answered; each answer a pair or not
        assert s["conversations"] == 30 and s["too_long"] + s["answered"] == 30, s
        assert s["pairs"] + s["empty_answer"] + s["same_answer"] == s["answered"], s
    assert sum(s["too_long"] for s in report["sources"]) > 0  # 160 tokens: some seed tasks do not fit
    assert (out / "run_info.json").is_file()


def test_dpo_reads_the_pairs_as_they_are(pairs_run):
    out, report, _ = pairs_run
    data, reports = load_mixture(ChatDataArguments(datasets=[{"path": str(out / "pairs.jsonl"), "format": "preference"}],
                                                   test_split_size=0), 0, PREFERENCE)
    assert len(data["train"]) == report["pairs"] and reports[0].invalid == 0


def test_a_model_without_a_chat_template_is_one_line(tiny_chat_model_dir, data_dir, tmp_path, capsys):
    model = tmp_path / "model"
    model.mkdir()
    for f in tiny_chat_model_dir.iterdir():
        (model / f.name).write_bytes(f.read_bytes())
    config = json.loads((model / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    (model / "chat_template.jinja").unlink(missing_ok=True)
    err = run_recipe_error("on_policy_pairs", pairs_args(model, data_dir, tmp_path / "out"), capsys)
    assert "has no chat template" in err and not (tmp_path / "out").exists()


def test_an_empty_answer_or_the_reference_itself_is_no_pair_and_is_counted(tiny_chat_model_dir, data_dir, tmp_path,
                                                                          monkeypatch):
    real = recipes.on_policy_pairs.generate_answers

    def answers(model, tokenizer, prompts, *args):  # the model's answers, but the reference to the first prompt and
        rows = real(model, tokenizer, prompts, *args)  # nothing to the second
        rows[0]["answer"], rows[1]["answer"] = references[0], " "
        return rows

    out = tmp_path / "pairs"
    references = []
    monkeypatch.setattr(recipes.on_policy_pairs, "generate_answers", answers)

    def mixture(*args, **kwargs):  # the reference answers, in the order the recipe reads them
        data, reports = load_mixture(*args, **kwargs)
        references.extend(r["messages"][-1]["content"] for r in data["train"])
        return data, reports

    monkeypatch.setattr(recipes.on_policy_pairs, "load_mixture", mixture)
    report = recipes.on_policy_pairs.main(pairs_args(tiny_chat_model_dir, data_dir, out, "--max_length", "10000"))
    assert report["same_answer"] == 1 and report["empty_answer"] == 1 and report["too_long"] == 0
    assert report["pairs"] == report["answered"] - 2 == 58
    assert report["pairs"] == len((out / "pairs.jsonl").read_text().splitlines())
