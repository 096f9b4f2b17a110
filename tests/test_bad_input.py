"""Bad input at every entry point, in one table: one line naming the file / line / key (plus the --help hint), exit
code 2, no traceback, nothing written at the output path."""

import json
import shutil
from pathlib import Path

import pytest

from testkit import REPO_ROOT, load_recipe

# Files the cases point at, made once per test in tmp_path.
FILES = {
    "truncated.jsonl": '{"text": "a complete line"}\n{"text": "cut off mid-rec',
    "latin1.txt": "caf\xe9 au lait\n".encode("latin-1"),
    "empty.jsonl": "",
    "wrong_schema.jsonl": '{"body": "no text column"}\n',
    "unknown_schema.json": json.dumps([{"question": "Say hi", "reply": "hi"}] * 10),
    "unknown_key.yaml": "block_size: 64\nblock_sise: 32\n",
    "wrong_type.yaml": "block_size: sixty-four\n",
    "labels.tsv": "sentence\tlabel\nfine film\t1\n",
    "empty_prompts.jsonl": "\n",
    "not_a_model/readme.txt": "hello",
    "no_label_column.csv": "review,stars\nfine hotel,5\nnoisy room,1\n",
    "one_label.csv": "text,label\ngood,1\nfine,1\nnice,1\n",
    "odd_label.csv": "text,label\ngood,positive\nbad,meh\n",
    "empty_text.csv": "text,label\ngood,1\n   ,0\nbad,0\n",
    "english.txt": "Plain English text, without a single Chinese character in it.\n" * 20,
    "same_answers.json": json.dumps([{"prompt": "Say hi", "chosen": "hi", "rejected": "hi"}]),
    "bad_pipeline.yaml": "stages:\n  - {name: a, run: 'echo {rundir}'}\n",
}


def pack(tok, *extra):
    return ["--tokenizer_name_or_path", str(tok), "--output_dir", "{out}", *extra]


def dpo(model, *extra):
    return ["--config", str(REPO_ROOT / "configs/dpo/tiny.yaml"), "--model_name_or_path", model, "--output_dir",
            "{out}", "--report_to", "none", *extra]


def cls(model, data, *extra):
    return ["--model_name_or_path", model, "--train_file", data, "--output_dir", "{out}", "--report_to", "none", *extra]


# (entry point, argv template, expected fragment). {tmp}: the test's folder; {tok}: a tokenizer; {model}: a chat
# model; {adapter}: a LoRA adapter on it; {notok}: a model folder without a tokenizer; {nochat}: a model whose
# tokenizer has no chat template;
# {packed}: packed data; {out}: the output path that must not appear.
CASES = [
    ("pack", ["--train_sources", "{tmp}/truncated.jsonl", *pack("{tok}")], "truncated.jsonl, line 2: invalid JSON"),
    ("pack", ["--train_sources", "{tmp}/latin1.txt", *pack("{tok}")], "latin1.txt, line 1: not UTF-8"),
    ("pack", ["--train_sources", "{tmp}/empty.jsonl", *pack("{tok}")], "empty.jsonl"),
    ("pack", ["--train_sources", "{tmp}/wrong_schema.jsonl", *pack("{tok}")], "no column 'text'"),
    ("pack", ["--train_sources", "{tmp}/missing.jsonl", *pack("{tok}")], "source not found"),
    ("pack", ["--config", "{tmp}/unknown_key.yaml", "--train_sources", "x.jsonl", *pack("{tok}")],
     "unknown key 'block_sise' (did you mean 'block_size'?)"),
    ("pack", ["--config", "{tmp}/wrong_type.yaml", "--train_sources", "x.jsonl", *pack("{tok}")],
     "key 'block_size' has value 'sixty-four' (str); expected int"),
    ("train_tokenizer", ["--train_sources", "{tmp}/latin1.txt", "--output_dir", "{out}"], "not UTF-8"),
    ("extend_tokenizer", ["--base_tokenizer_name_or_path", "{tok}", "--train_sources", "{tmp}/english.txt",
                          "--output_dir", "{out}"], "the extension corpus adds no token"),
    ("train_tokenizer", ["--train_sources", "{tmp}/truncated.jsonl", "--output_dir", "{out}", "--vocab_size", "100"],
     "vocab_size"),
    ("pretrain", ["--model_preset", "tiny", "--dataset_path", "{tmp}/missing", "--output_dir", "{out}",
                  "--max_steps", "1"], "missing"),
    ("pretrain", ["--model_preset", "tiny", "--dataset_path", "{packed}", "--tokenizer_name_or_path", "{tok2}",
                  "--output_dir", "{out}", "--max_steps", "1"], "vocab mismatch"),
    ("sft", ["--model_name_or_path", "{model}", "--datasets", "{tmp}/unknown_schema.json", "--output_dir", "{out}",
             "--max_steps", "1", "--eval_strategy", "no", "--report_to", "none"], "unknown_schema.json"),
    ("sft", ["--model_name_or_path", "{model}", "--load_in_4bit", "true", "--output_dir", "{out}"],
     "load_in_4bit / load_in_8bit train adapters only"),
    ("dpo", dpo("{model}", "--datasets", "{tmp}/same_answers.json"),
     "same_answers.json: 1 of 1 records invalid (100.0% > max_invalid_share 1.0%): record 0: chosen and rejected are "
     "the same answer"),
    ("dpo", dpo("{model}", "--loss_type", "magic"), "loss_type magic unknown"),
    ("dpo", dpo("{model}", "--max_prompt_length", "600"), "max_prompt_length (600) must be below max_length (512)"),
    ("dpo", dpo("{nochat}"), "has no chat template"),
    ("eval", ["--model_name_or_path", "{model}", "--output_dir", "{out}", "--tasks", "generation",
                  "--prompts_file", "{tmp}/empty_prompts.jsonl"], "no prompt in the file"),
    ("eval", ["--model_name_or_path", "{tmp}/not_a_model", "--output_dir", "{out}"], "not a model"),
    ("export", ["--model_name_or_path", "{model}", "--output_dir", "{out}", "--repo_id", "a//b"], "invalid Hub id"),
    ("export", ["--model_name_or_path", "{tmp}/not_a_model", "--output_dir", "{out}", "--repo_id", "a/b"],
     "not a model"),
    ("push", ["--folder", "{model}", "--repo_id", "a/b", "--dry_run"], "no README.md"),
    ("merge_lora", ["--adapter_dir", "{model}", "--output_dir", "{out}"], "no adapter_config.json"),
    ("consolidate", ["--checkpoint_dir", "{tmp}/not_a_model", "--output_dir", "{out}"], "neither a checkpoint nor a run folder"),
    ("data_prep", ["--config", "{tmp}/unknown_key.yaml"], "unknown key"),
    ("classify", cls("{model}", "{tmp}/no_label_column.csv", "--text_column", "review"), "no column 'label'"),
    ("classify", cls("{model}", "{tmp}/one_label.csv"), "only one label (1)"),
    ("classify", cls("{model}", "{tmp}/odd_label.csv", "--class_names", "negative", "positive"),
     "odd_label.csv, record 2: label 'meh' is not in class_names"),
    ("classify", cls("{model}", "{tmp}/empty_text.csv"), "empty_text.csv, record 2: text column 'text' is empty"),
    # a model folder saved without its tokenizer, at every entry point that loads one
    ("classify", cls("{notok}", "{tmp}/one_label.csv"), "model: no tokenizer files"),
    ("sft", ["--model_name_or_path", "{notok}", "--output_dir", "{out}", "--report_to", "none"],
     "model: no tokenizer files"),
    ("dpo", dpo("{notok}"), "model: no tokenizer files"),
    ("chat", ["--model_name_or_path", "{notok}"], "model: no tokenizer files"),
    ("chat", ["--model_name_or_path", "{nochat}"],
     "has no chat template: train one with make tokenizer (ChatML), or chat with an SFT, DPO or exported model"),
    ("chat", ["--model_name_or_path", "{model}", "--max_new_tokens", "5000"], "leaves no room for the conversation"),
    ("chat", ["--model_name_or_path", "{tmp}/nothing_here"], "nothing_here"),
    ("serve", ["--model_name_or_path", "{tmp}/nothing_here"], "nothing_here"),
    ("serve", ["--model_name_or_path", "{nochat}"],
     "has no chat template: train one with make tokenizer (ChatML), or serve an SFT, DPO or exported model"),
    ("serve", ["--model_name_or_path", "{notok}"], "model: no tokenizer files"),
    ("serve", ["--model_name_or_path", "{model}", "--max_tokens", "4096"], "leaves no room for a prompt"),
    ("on_policy_pairs", ["--config", "configs/pairs/tiny.yaml", "--model_name_or_path", "{notok}", "--output_dir",
                         "{out}"], "model: no tokenizer files"),
    ("on_policy_pairs", ["--config", "configs/pairs/tiny.yaml", "--model_name_or_path", "{model}", "--output_dir",
                         "{out}", "--batch_size", "0"], "batch_size must be >= 1, got 0"),
    ("eval", ["--model_name_or_path", "{notok}", "--output_dir", "{out}", "--tasks", "generation"],
     "model: no tokenizer files"),
    ("export", ["--model_name_or_path", "{notok}", "--output_dir", "{out}", "--repo_id", "a/b"],
     "model: no tokenizer files"),
    ("pack", ["--train_sources", "{tmp}/english.txt", *pack("{notok}")], "model: no tokenizer files"),
    ("pretrain", ["--model_name_or_path", "{notok}", "--dataset_path", "{packed}", "--tokenizer_name_or_path",
                  "{notok}", "--output_dir", "{out}", "--max_steps", "1"], "model: no tokenizer files"),
    ("report", ["--runs", "{tmp}/no_such_run", "--output_dir", "{out}"], "no_such_run not found"),
    ("run_pipeline", ["--config", "{tmp}/bad_pipeline.yaml", "--run_dir", "{out}"],
     "bad_pipeline.yaml: stages[0] (a): unknown placeholder(s) ['rundir']"),
]


@pytest.fixture
def workspace(tmp_path):
    for name, content in FILES.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return tmp_path


@pytest.fixture(scope="module")
def other_tokenizer(tmp_path_factory, tiny_tokenizer_dir):
    """The tiny tokenizer with one more token: data packed with the original must be refused."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    tok.add_tokens(["<extra_token>"])
    out = tmp_path_factory.mktemp("tok2") / "tokenizer"
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def model_without_tokenizer(tmp_path_factory, tiny_chat_model_dir):
    out = tmp_path_factory.mktemp("notok") / "model"
    out.mkdir()
    for name in ("config.json", "model.safetensors", "generation_config.json"):
        shutil.copy(tiny_chat_model_dir / name, out / name)
    return out


@pytest.fixture(scope="module")
def model_without_chat_template(tmp_path_factory, tiny_chat_model_dir):
    from transformers import AutoTokenizer

    out = tmp_path_factory.mktemp("nochat") / "model"
    shutil.copytree(tiny_chat_model_dir, out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    tokenizer.chat_template = None
    (out / "chat_template.jinja").unlink(missing_ok=True)
    tokenizer.save_pretrained(out)
    return out


@pytest.mark.parametrize("entry, argv, expected", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(entry, argv, expected, workspace, tiny_tokenizer_dir,
                                                         other_tokenizer, tiny_packed_dir, tiny_chat_model_dir,
                                                         model_without_tokenizer, model_without_chat_template, lora_adapter,
                                                         capsys):
    out = workspace / "out"
    values = {"tmp": workspace, "tok": tiny_tokenizer_dir, "tok2": other_tokenizer, "model": tiny_chat_model_dir,
              "packed": tiny_packed_dir, "out": out, "notok": model_without_tokenizer,
              "nochat": model_without_chat_template, "adapter": lora_adapter}
    argv = [a.format(**values) for a in argv]
    if entry == "data_prep":
        from data_prep.cli import main
    else:
        main = load_recipe(entry).main
    with pytest.raises(SystemExit) as exc:
        main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if "error:" in line]
    assert exc.value.code == 2, err[-2000:]
    assert "Traceback" not in err and len(lines) == 1, err[-2000:]
    assert expected in lines[0], lines[0]
    assert not out.exists() and not list(Path(workspace).glob(".out*"))


def test_every_entry_point_is_in_the_table():
    recipes = {p.stem for p in (REPO_ROOT / "recipes").glob("*.py") if not p.name.startswith("_")}
    assert recipes | {"data_prep"} == {entry for entry, _, _ in CASES}
    assert len(CASES) >= 37
