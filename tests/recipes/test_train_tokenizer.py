import json

import pytest
from transformers import AutoTokenizer

import recipes.train_tokenizer
from testkit import run_recipe_error
from llm_recipes.corpus import script_language
from llm_recipes.tokenizer import min_vocab_size


@pytest.fixture(scope="module")
def tok(tiny_tokenizer_dir):
    return AutoTokenizer.from_pretrained(tiny_tokenizer_dir)


def real_texts(data_dir):
    en = [l for l in (data_dir / "wikitext2/test.txt").read_text(encoding="utf-8").splitlines() if l.strip()][:400]
    en += (data_dir / "tinyshakespeare/input.txt").read_text(encoding="utf-8").split("\n\n")[:200]
    poems = json.loads((data_dir / "chinese_poetry/poet.tang.0.json").read_text(encoding="utf-8"))  # traditional, unseen
    zh = ["\n".join(p["paragraphs"]) for p in poems[:300]]
    reviews = (data_dir / "chnsenticorp/ChnSentiCorp_htl_all.csv").read_text(encoding="utf-8").splitlines()[1:301]
    zh += [r.split(",", 1)[1] for r in reviews]
    return en, zh


def test_lossless_round_trip_on_real_english_and_chinese(tok, data_dir):
    en, zh = real_texts(data_dir)
    assert sum(script_language(t) == "zh" for t in zh) > 0.9 * len(zh)
    for text in en + zh + ["  leading and trailing  ", "tabs\tand\r\nCRLF", "emoji 🦙 and ℃ and 𝔘𝔫𝔦"]:
        ids = tok.encode(text, add_special_tokens=False)
        assert tok.decode(ids) == text
        assert tok.unk_token_id is None or tok.unk_token_id not in ids  # byte-level: nothing is unknown


def test_digits_split_one_by_one(tok):
    pieces = [tok.decode([i]) for i in tok.encode("in 2024 we had 31337 llamas", add_special_tokens=False)]
    assert all(len(p.strip()) <= 1 for p in pieces if p.strip().isdigit())
    assert "".join(pieces) == "in 2024 we had 31337 llamas"


def test_special_tokens(tok):
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<s>", "</s>", "<pad>")
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (0, 1, 2)
    assert tok.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"]) == [3, 4]
    assert len(tok) == 2048


CONVERSATION = [
    {"role": "system", "content": "You answer briefly."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "北京是哪个国家的首都？"},
    {"role": "assistant", "content": "中国。"},
]


def test_chat_template_renders_chatml(tok):
    text = tok.apply_chat_template(CONVERSATION, tokenize=False)
    assert text == (
        "<|im_start|>system\nYou answer briefly.<|im_end|>\n"
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
        "<|im_start|>assistant\nParis.<|im_end|>\n"
        "<|im_start|>user\n北京是哪个国家的首都？<|im_end|>\n"
        "<|im_start|>assistant\n中国。<|im_end|>\n"
    )
    prompt = tok.apply_chat_template(CONVERSATION[:2], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n")


def test_assistant_mask_covers_exactly_the_assistant_turns(tok):
    out = tok.apply_chat_template(CONVERSATION, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    ids, mask = out["input_ids"], out["assistant_masks"]
    assert len(ids) == len(mask)
    # contiguous masked spans, one per assistant turn, each exactly "<content><|im_end|>"
    spans, start = [], None
    for i, m in enumerate(mask + [0]):
        if m and start is None:
            start = i
        if not m and start is not None:
            spans.append(ids[start:i])
            start = None
    assert [tok.decode(s) for s in spans] == ["Paris.<|im_end|>", "中国。<|im_end|>"]
    unmasked = tok.decode([i for i, m in zip(ids, mask) if not m])
    for message in CONVERSATION:
        if message["role"] != "assistant":
            assert message["content"] in unmasked
    assert "Paris" not in unmasked and "中国。" not in unmasked


def test_report_written_for_both_scripts(tiny_tokenizer_dir):
    report = json.loads((tiny_tokenizer_dir / "tokenizer_report.json").read_text())
    assert set(report["by_language"]) == {"en", "zh"}
    for row in report["by_language"].values():
        assert row["tokens"] > 0 and row["bytes_per_token"] >= row["chars_per_token"] > 0.5
    assert report["by_language"]["zh"]["bytes_per_token"] > report["by_language"]["zh"]["chars_per_token"] * 2
    assert 0 < report["vocab_used_share"] <= 1
    assert "| zh |" in (tiny_tokenizer_dir / "tokenizer_report.md").read_text()
    assert (tiny_tokenizer_dir / "resolved_config.yaml").exists() and (tiny_tokenizer_dir / "run_info.json").exists()
    assert not list(tiny_tokenizer_dir.parent.glob(".*.tmp")), "staging folder left behind"


def test_vocab_smaller_than_byte_alphabet_plus_specials_is_a_config_error(tokenizer_config, tmp_path, capsys):
    err = run_recipe_error(
        "train_tokenizer",
        ["--config", str(tokenizer_config), "--output_dir", str(tmp_path / "t"),
         "--vocab_size", str(min_vocab_size() - 1)],
        capsys,
    )
    assert "vocab_size" in err and str(min_vocab_size()) in err
    assert not (tmp_path / "t").exists()


def test_corpus_is_streamed_not_listed(tokenizer_config, tmp_path, monkeypatch):
    """The trainer gets an iterator of batches; it never sees the corpus as one Python list."""
    import llm_recipes.tokenizer as tokenizer_module
    seen = {}
    real_train = tokenizer_module.train_bpe

    def spy(batches, *args, **kwargs):
        seen["type"] = type(batches)
        return real_train(batches, *args, **kwargs)

    recipe = recipes.train_tokenizer
    monkeypatch.setattr(recipe, "train_bpe", spy)
    recipe.main(["--config", str(tokenizer_config), "--output_dir", str(tmp_path / "t"),
                 "--vocab_size", "300", "--max_documents", "500"])
    assert seen["type"].__name__ == "generator"
