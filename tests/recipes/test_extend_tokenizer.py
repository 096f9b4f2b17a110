import json

import pytest
import yaml
from tokenizers import Tokenizer, models
from transformers import AutoTokenizer, PreTrainedTokenizerFast

import recipes.extend_tokenizer
from testkit import run_recipe_error
from llm_recipes.corpus import CorpusArguments, load_corpus
from llm_recipes.tokenizer import train_bpe, wrap

EN = [{"path": "wikitext2/valid.txt", "sample_by": "line"}, {"path": "tinyshakespeare/input.txt",
                                                               "sample_by": "paragraph"},
      {"path": "c4_demo/c4_demo.jsonl"}]  # web text: curly quotes, dashes, non-ASCII Latin
ZH = [{"path": "chnsenticorp/ChnSentiCorp_htl_all.csv", "text_column": "review"},
      {"path": "chinese_poetry/lunyu.json", "text_column": "paragraphs"}]


def sources(data_dir, specs):
    return [{**s, "path": str(data_dir / s["path"])} for s in specs]


@pytest.fixture(scope="module")
def corpora(data_dir):
    en, _ = load_corpus(CorpusArguments(train_sources=sources(data_dir, EN)))
    zh, _ = load_corpus(CorpusArguments(train_sources=sources(data_dir, ZH)))
    return en, zh


@pytest.fixture(scope="module")
def english_base(corpora, tmp_path_factory):
    """A byte-level BPE that never saw Chinese (the case the extension is for)."""
    en, _ = corpora
    out = tmp_path_factory.mktemp("en") / "tokenizer"
    wrap(train_bpe((b["text"] for b in en["train"].iter(1000)), 2048, 2, len(en["train"])), 1024).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def extended(english_base, data_dir, tmp_path_factory):
    work = tmp_path_factory.mktemp("ext")
    config = work / "extend.yaml"
    config.write_text(yaml.safe_dump({"train_sources": sources(data_dir, ZH), "validation_sources": [
        str(data_dir / "c4_demo/c4_demo.jsonl"), {"path": str(data_dir / ZH[1]["path"]), "text_column": "paragraphs"}]}))
    recipes.extend_tokenizer.main(["--config", str(config), "--base_tokenizer_name_or_path", str(english_base),
                                   "--output_dir", str(work / "tokenizer"), "--vocab_size", "3000"])
    return work / "tokenizer"


def test_old_ids_unchanged_new_ids_on_chinese_and_lossless(english_base, extended, corpora):
    base, ext = AutoTokenizer.from_pretrained(english_base), AutoTokenizer.from_pretrained(extended)
    en, zh = (list(split["validation"]["text"]) for split in corpora)
    assert len(ext) > len(base) and ext.get_vocab().items() >= base.get_vocab().items()
    assert any("“" in t or "’" in t for t in en)  # the hard case: punctuation that Chinese text uses too
    assert all(base(t).input_ids == ext(t).input_ids for t in en)
    assert all(any(i >= len(base) for i in ext(t).input_ids) for t in zh if len(t) > 4)
    assert all(ext.decode(ext(t).input_ids) == t for t in en + zh)
    assert sum(len(ext(t).input_ids) for t in zh) < 0.5 * sum(len(base(t).input_ids) for t in zh)
    assert ext.chat_template == base.chat_template and ext.eos_token == base.eos_token


def test_extension_records_each_new_tokens_base_pieces(english_base, extended):
    base = AutoTokenizer.from_pretrained(english_base)
    extension = json.loads((extended / "extension.json").read_text())
    added = extension["added"]
    assert extension["base_vocab_size"] == len(base) and [a["id"] for a in added] == list(
        range(len(base), len(base) + len(added)))
    for entry in added[::97]:
        assert [t.id for t in base.backend_tokenizer.model.tokenize(entry["token"])] == entry["base_pieces"]
        assert len(entry["base_pieces"]) >= 2
    report = json.loads((extended / "tokenizer_report.json").read_text())
    zh_before, zh_after = report["before"]["by_language"]["zh"], report["after"]["by_language"]["zh"]
    assert zh_after["chars_per_token"] > 2 * zh_before["chars_per_token"]
    en_before, en_after = (report[k]["by_language"]["en"]["tokens"] for k in ("before", "after"))
    assert en_before - 10 <= en_after <= en_before  # only the odd CJK character inside English web pages changes


def test_a_tokenizer_that_is_not_byte_level_bpe_is_refused(data_dir, tmp_path, capsys):
    unigram = Tokenizer(models.Unigram([("<unk>", 0.0), ("a", -1.0), ("b", -2.0)], unk_id=0))
    base = tmp_path / "unigram"
    PreTrainedTokenizerFast(tokenizer_object=unigram, unk_token="<unk>").save_pretrained(base)
    err = run_recipe_error("extend_tokenizer", ["--base_tokenizer_name_or_path", str(base), "--output_dir",
                                                str(tmp_path / "o"), "--train_sources",
                                                str(data_dir / "chinese_poetry/lunyu.json")], capsys)
    assert "is Unigram: only byte-level BPE" in err and not (tmp_path / "o").exists()
