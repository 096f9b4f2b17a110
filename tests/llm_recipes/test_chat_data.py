import json

import datasets
import pytest
from transformers import AutoTokenizer

from llm_recipes.chat_data import (PREFERENCE, ChatDataArguments, ChatSource, convert, drop_too_long, load_mixture,
                                   load_source, report_dict, to_messages)
from llm_recipes.config import ConfigError


@pytest.fixture(scope="module")
def tokenizer(tiny_tokenizer_dir):
    return AutoTokenizer.from_pretrained(tiny_tokenizer_dir)


def raw_records(path):
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    return json.loads(text)


def assert_renders(messages, tokenizer):
    """Every turn appears in the ChatML rendering, assistant turns closed by <|im_end|>."""
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    for m in messages:
        closing = "<|im_end|>"
        assert f"<|im_start|>{m['role']}\n{m['content']}{closing}" in text
    assert text.count("<|im_start|>") == len(messages)


@pytest.mark.parametrize("relpath", ["alpaca_gpt4_en_demo/alpaca_en_demo.json", "alpaca_zh_demo/alpaca_zh_demo.json"])
def test_alpaca_en_and_zh(data_dir, tokenizer, relpath):
    path = data_dir / relpath
    ds, report = load_source(ChatSource(path=str(path)), max_invalid_share=0.0, seed=0)
    raw = raw_records(path)
    assert report.format == "alpaca" and report.records == len(raw) == len(ds) and report.invalid == 0
    with_input = next(i for i, r in enumerate(raw) if r["input"])
    row = ds.filter(lambda i: i == with_input, input_columns="record_index")[0]
    rec = raw[with_input]
    assert row["messages"] == [{"role": "user", "content": f"{rec['instruction']}\n\n{rec['input']}"},
                               {"role": "assistant", "content": rec["output"]}]
    assert_renders(row["messages"], tokenizer)


def test_sharegpt(data_dir, tokenizer):
    path = data_dir / "fastchat_sharegpt/dummy_conversation.json"
    ds, report = load_source(ChatSource(path=str(path)), 0.0, seed=0)
    raw = raw_records(path)
    assert report.format == "sharegpt" and len(ds) == len(raw) == 500
    multi = next(i for i, r in enumerate(raw) if len(r["conversations"]) >= 4)
    row = ds.filter(lambda i: i == multi, input_columns="record_index")[0]
    roles = {"human": "user", "gpt": "assistant"}
    assert row["messages"] == [{"role": roles[t["from"]], "content": t["value"]} for t in raw[multi]["conversations"]]
    assert_renders(row["messages"], tokenizer)


@pytest.mark.parametrize("relpath", ["stanford_alpaca/seed_tasks.jsonl", "belle_zh_seed_tasks/zh_seed_tasks.jsonl"])
def test_self_instruct_seed_tasks(data_dir, tokenizer, relpath):
    path = data_dir / relpath
    ds, report = load_source(ChatSource(path=str(path)), 0.0, seed=0)
    raw = raw_records(path)
    assert report.format == "self_instruct"
    assert len(ds) == sum(len(r["instances"]) for r in raw)
    first = ds.filter(lambda i: i == 0, input_columns="record_index")[0]
    assert first["messages"][-1] == {"role": "assistant", "content": raw[0]["instances"][0]["output"]}
    assert first["messages"][0]["content"].startswith(raw[0]["instruction"])
    assert_renders(first["messages"], tokenizer)


def test_openai_messages_and_prompt_completion(data_dir, tokenizer, tmp_path):
    """The shipped records rewritten in the two other layouts convert to the same conversations."""
    share = raw_records(data_dir / "fastchat_sharegpt/dummy_conversation.json")[:50]
    roles = {"human": "user", "gpt": "assistant"}
    openai = [{"messages": [{"role": "system", "content": "You are a helpful assistant."}]
               + [{"role": roles[t["from"]], "content": t["value"]} for t in r["conversations"]]} for r in share]
    (tmp_path / "openai.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in openai) + "\n")
    ds, report = load_source(ChatSource(path=str(tmp_path / "openai.jsonl")), 0.0, seed=0)
    assert report.format == "messages" and ds.sort("record_index")["messages"] == [r["messages"] for r in openai]
    assert_renders(ds[0]["messages"], tokenizer)

    alpaca = raw_records(data_dir / "alpaca_zh_demo/alpaca_zh_demo.json")[:50]
    pc = [{"prompt": r["instruction"], "completion": r["output"]} for r in alpaca]
    (tmp_path / "pc.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in pc) + "\n")
    ds, report = load_source(ChatSource(path=str(tmp_path / "pc.jsonl")), 0.0, seed=0)
    assert report.format == "prompt_completion"
    assert ds.sort("record_index")[0]["messages"] == [{"role": "user", "content": pc[0]["prompt"]},
                                                      {"role": "assistant", "content": pc[0]["completion"]}]
    # conversational prompt/completion (TRL's layout) too
    conv = datasets.Dataset.from_list([{"prompt": [{"role": "user", "content": r["prompt"]}],
                                        "completion": [{"role": "assistant", "content": r["completion"]}]} for r in pc])
    out = to_messages(conv, "prompt_completion")
    assert out[3]["messages"][1]["content"] == pc[3]["completion"] and out[3]["error"] is None


def write_with_bad_records(data_dir, tmp_path, n_good=200):
    records = raw_records(data_dir / "fastchat_sharegpt/dummy_conversation.json")[:n_good]
    records[10]["conversations"][0]["from"] = "bot"  # unknown role
    records[20]["conversations"][1]["value"] = "   "  # empty assistant turn
    del records[30]["conversations"][1]["value"]  # missing field
    path = tmp_path / "mixed.json"
    path.write_text(json.dumps(records, ensure_ascii=False))
    return path


def test_invalid_records_dropped_and_counted(data_dir, tmp_path, caplog):
    path = write_with_bad_records(data_dir, tmp_path)
    ds, report = load_source(ChatSource(path=str(path)), max_invalid_share=0.02, seed=0)
    assert report.records == 200 and report.invalid == 3 and len(ds) == 197
    assert sorted(set(range(200)) - set(ds["record_index"])) == [10, 20, 30]
    joined = "\n".join(report.invalid_examples)
    assert f"{path}, record 10: conversations[0]: unknown role 'bot'" in joined
    assert f"{path}, record 20: message 1: empty assistant turn" in joined
    assert f"{path}, record 30: conversations[1]: missing 'from' or 'value'" in joined
    assert "dropped 3 invalid of 200 records" in caplog.text


def test_too_many_invalid_records_stop_the_run(data_dir, tmp_path):
    path = write_with_bad_records(data_dir, tmp_path)
    with pytest.raises(ConfigError) as exc:
        load_source(ChatSource(path=str(path)), max_invalid_share=0.01, seed=0)
    msg = str(exc.value)
    assert msg.startswith(f"{path}: 3 of 200 records invalid (1.5% > max_invalid_share 1.0%)")
    assert "record 10: conversations[0]: unknown role 'bot'" in msg and "record 30" in msg


def test_alpaca_missing_output_is_named(data_dir, tmp_path):
    records = raw_records(data_dir / "alpaca_gpt4_en_demo/alpaca_en_demo.json")[:20]
    del records[7]["output"]
    (tmp_path / "a.json").write_text(json.dumps(records))
    with pytest.raises(ConfigError, match=r"a.json: 1 of 20 records invalid .*record 7: missing field 'output'"):
        load_source(ChatSource(path=str(tmp_path / "a.json")), 0.01, seed=0)


def test_mixture_fractions_and_deterministic_held_out_split(data_dir):
    def mix(seed):
        args = ChatDataArguments(datasets=[
            {"path": str(data_dir / "alpaca_gpt4_en_demo/alpaca_en_demo.json"), "fraction": 3},
            {"path": str(data_dir / "alpaca_zh_demo/alpaca_zh_demo.json"), "fraction": 1, "max_samples": 400},
        ], test_split_size=0.1)
        return load_mixture(args, seed)

    data, reports = mix(0)
    en, zh = reports
    assert (en.test, zh.test) == (100, 40)  # 10% of each source held out
    # weights 3:1, as large as possible without oversampling: all 899 English train rows, 300 of the 360 Chinese
    assert (en.train, zh.train) == (899, 300)
    assert len(data["train"]) == en.train + zh.train and len(data["test"]) == 140
    key = lambda row: (row["source"], row["record_index"])  # noqa: E731
    train_keys = {key(r) for r in data["train"]}
    assert not train_keys & {key(r) for r in data["test"]}  # held-out instructions never trained on
    again, _ = mix(0)
    assert again["test"]["record_index"] == data["test"]["record_index"]
    assert again["train"]["record_index"] == data["train"]["record_index"]
    other, _ = mix(1)
    assert other["test"]["record_index"] != data["test"]["record_index"]


def test_too_long_conversations_are_dropped_whole_and_counted_per_source(data_dir, tokenizer):
    args = ChatDataArguments(datasets=[str(data_dir / "alpaca_gpt4_en_demo/alpaca_en_demo.json"),
                                       str(data_dir / "alpaca_zh_demo/alpaca_zh_demo.json")], test_split_size=0.1)
    data, reports = load_mixture(args, 0)
    before = {split: len(ds) for split, ds in data.items()}
    kept = drop_too_long(data, tokenizer, 256, reports)
    for split, ds in kept.items():
        lengths = [len(tokenizer.apply_chat_template(m, tokenize=True, return_dict=True)["input_ids"])
                   for m in ds["messages"]]
        assert max(lengths) <= 256 and 0 < len(ds) < before[split]
    en, zh = reports
    assert en.too_long > 0 and zh.too_long > 0
    assert en.train + zh.train == len(kept["train"]) and en.test + zh.test == len(kept["test"])
    assert report_dict(reports)["too_long_dropped"] == sum(before.values()) - sum(len(d) for d in kept.values())
    with pytest.raises(ConfigError, match="longer than max_length 4"):
        drop_too_long(data, tokenizer, 4, reports)


def test_config_mistakes():
    with pytest.raises(ConfigError, match=r"datasets\[0\]: unknown key\(s\) \['formt'\]"):
        ChatDataArguments(datasets=[{"path": "x.json", "formt": "alpaca"}])
    with pytest.raises(ConfigError, match="format must be one of"):
        ChatDataArguments(datasets=[{"path": "x.json", "format": "vicuna"}])
    with pytest.raises(ConfigError, match="fraction"):
        ChatDataArguments(datasets=[{"path": "a.json", "fraction": 1}, {"path": "b.json"}])


# --- preference pairs (DPO) -------------------------------------------------------------------------------------------

SHAREGPT_ROLES = {"human": "user", "gpt": "assistant", "system": "system"}


def pairs(records, fmt="auto"):
    return convert(datasets.Dataset.from_list(records), fmt, "pairs", PREFERENCE)


@pytest.mark.parametrize("name", ["dpo_en_demo.json", "dpo_zh_demo.json"])
def test_shipped_sharegpt_pairs_keep_every_prompt_turn(name, data_dir, tokenizer):
    path = data_dir / "preference" / name
    raw = raw_records(path)
    ds, report = load_source(ChatSource(path=str(path)), max_invalid_share=0.0, seed=0, task=PREFERENCE)
    assert report.format == "sharegpt" and report.records == report.conversations == len(ds) == len(raw)
    multi = max(range(len(raw)), key=lambda i: len(raw[i]["conversations"]))
    row = next(r for r in ds if r["record_index"] == multi)
    assert row["prompt"] == [{"role": SHAREGPT_ROLES[t["from"]], "content": t["value"]}
                             for t in raw[multi]["conversations"]]
    assert row["chosen"] == [{"role": "assistant", "content": raw[multi]["chosen"]["value"]}]
    assert row["rejected"] == [{"role": "assistant", "content": raw[multi]["rejected"]["value"]}]
    assert_renders(row["prompt"] + row["chosen"], tokenizer)


def test_trl_alpaca_and_implicit_prompt_pairs_convert():
    user = {"role": "user", "content": "Name a colour."}
    turns = [{"role": "system", "content": "Be brief."}, user, {"role": "assistant", "content": "Red."},
             {"role": "user", "content": "Another?"}]
    rows = pairs([{"prompt": "Name a colour.", "chosen": "Blue.", "rejected": "No."}], "preference")
    assert rows[0]["prompt"] == [user] and rows[0]["chosen"] == [{"role": "assistant", "content": "Blue."}]
    rows = pairs([{"prompt": turns, "chosen": [{"role": "assistant", "content": "Green."}],
                   "rejected": [{"role": "assistant", "content": "Red."}]}])  # auto: TRL conversational
    assert rows[0]["prompt"] == turns and rows[0]["error"] is None
    implicit = pairs([{"chosen": turns + [{"role": "assistant", "content": "Green."}],
                       "rejected": turns + [{"role": "assistant", "content": "Red."}]}], "preference")
    assert implicit[0]["prompt"] == turns and implicit[0]["rejected"] == [{"role": "assistant", "content": "Red."}]
    h4 = pairs([{"prompt": "Name a colour.", "chosen": [user, {"role": "assistant", "content": "Blue."}],
                 "rejected": [user, {"role": "assistant", "content": "No."}]}])  # ultrafeedback_binarized's shape
    assert h4[0]["prompt"] == [user] and h4[0]["chosen"] == [{"role": "assistant", "content": "Blue."}]
    alpaca = pairs([{"instruction": "Translate", "input": "chat", "chosen": "cat", "rejected": "dog",
                     "system": "You translate French."}])
    assert alpaca[0]["prompt"] == [{"role": "system", "content": "You translate French."},
                                   {"role": "user", "content": "Translate\n\nchat"}]


def test_bad_pairs_are_dropped_and_counted_by_record(data_dir, tmp_path):
    records = raw_records(data_dir / "preference/dpo_zh_demo.json")[:100]
    records[4]["chosen"]["value"] = ""  # empty chosen
    records[5]["rejected"] = dict(records[5]["chosen"])  # the same answer twice
    records[6]["conversations"].append({"from": "gpt", "value": "an answer already"})  # prompt ends with the assistant
    records[7]["conversations"][0]["from"] = "bot"  # unknown role
    del records[8]["rejected"]
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps(records, ensure_ascii=False))
    ds, report = load_source(ChatSource(path=str(path)), max_invalid_share=0.05, seed=0, task=PREFERENCE)
    assert report.invalid == 5 and len(ds) == 95
    assert sorted(set(range(100)) - set(ds["record_index"])) == [4, 5, 6, 7, 8]
    joined = "\n".join(report.invalid_examples)
    for expected in ("record 4: empty 'chosen' answer", "record 5: chosen and rejected are the same answer",
                     "record 6: the prompt must end with a user turn",
                     "record 7: conversations[0]: unknown role 'bot'",
                     "record 8: missing field 'rejected'"):
        assert expected in joined, joined


def test_a_format_of_the_other_task_is_refused(data_dir):
    with pytest.raises(ConfigError, match="format 'messages' is not a preference format"):
        load_source(ChatSource(path=str(data_dir / "preference/dpo_en_demo.json"), format="messages"), 0.0, 0,
                    task=PREFERENCE)
