import json
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file
from tokenizers import Tokenizer, models
from transformers import AutoTokenizer, LlamaForCausalLM, PreTrainedTokenizerFast

import recipes.extend_tokenizer
import recipes.pack
import recipes.pretrain
from testkit import MODELS_DIR, REPO_ROOT, TWO_PROCESSES, run_recipe_error
import warmproc
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


@pytest.fixture(scope="module")
def llama2_extended(data_dir, tmp_path_factory):
    """Llama 2's real tokenizer (SentencePiece's BPE with byte fallback, as transformers converts it) extended with
    the same Chinese corpus: Chinese-LLaMA-Alpaca's own starting point."""
    out = tmp_path_factory.mktemp("ext-llama2") / "tokenizer"
    config = out.parent / "extend.yaml"
    config.write_text(yaml.safe_dump({"train_sources": sources(data_dir, ZH)}))
    recipes.extend_tokenizer.main(["--config", str(config), "--base_tokenizer_name_or_path",
                                   str(MODELS_DIR / "llama2-spm"), "--output_dir", str(out), "--vocab_size", "3000"])
    return out


@pytest.mark.slow  # a 32k vocabulary read, extended and saved, and both tokenizers over the validation texts: ~10 s
def test_a_sentencepiece_base_keeps_its_ids_and_gains_chinese_tokens(llama2_extended, corpora):
    base, ext = AutoTokenizer.from_pretrained(MODELS_DIR / "llama2-spm"), AutoTokenizer.from_pretrained(llama2_extended)
    en, zh = (list(split["validation"]["text"]) for split in corpora)
    assert len(ext) > len(base) and ext.get_vocab().items() >= base.get_vocab().items()
    assert all(base(t).input_ids == ext(t).input_ids for t in en)
    # lossless wherever the base is: Llama 2 itself drops a text's leading space (README of ../shared/models)
    assert all(ext.decode(ext(t).input_ids, skip_special_tokens=True) == t for t in zh)
    assert sum(len(ext(t).input_ids) for t in zh) < 0.8 * sum(len(base(t).input_ids) for t in zh)
    assert ext.chat_template == base.chat_template and ext.eos_token == base.eos_token
    added = json.loads((llama2_extended / "extension.json").read_text())["added"]
    byte_pieces = {i for i in range(len(base)) if base.convert_ids_to_tokens(i).startswith("<0x")}
    single = [a for a in added if len(a["token"]) == 1]  # a character Llama 2 spelt as its UTF-8 bytes
    assert single and all(set(a["base_pieces"]) <= byte_pieces and len(a["base_pieces"]) == 3 for a in single)


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


def test_a_unigram_tokenizer_is_refused(data_dir, tmp_path, capsys):
    unigram = Tokenizer(models.Unigram([("<unk>", 0.0), ("a", -1.0), ("b", -2.0)], unk_id=0))
    base = tmp_path / "unigram"
    PreTrainedTokenizerFast(tokenizer_object=unigram, unk_token="<unk>").save_pretrained(base)
    err = run_recipe_error("extend_tokenizer", ["--base_tokenizer_name_or_path", str(base), "--output_dir",
                                                str(tmp_path / "o"), "--train_sources",
                                                str(data_dir / "chinese_poetry/lunyu.json")], capsys)
    assert "is Unigram: only BPE is extended here" in err and not (tmp_path / "o").exists()


# --- the model side: embeddings grown with mean-initialised rows, then continued pretraining -------------------------


@pytest.fixture(scope="module")
def english_model(english_base, tmp_path_factory):
    from llm_recipes.model import ModelArguments, build_llama_config

    out = tmp_path_factory.mktemp("en-model") / "model"
    tokenizer = AutoTokenizer.from_pretrained(english_base)
    torch.manual_seed(0)
    LlamaForCausalLM(build_llama_config(ModelArguments(model_preset="tiny"), tokenizer=tokenizer)).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def test_new_embedding_rows_start_as_the_mean_of_their_pieces(english_model, extended):
    from llm_recipes.continued import resize_for_extension

    model = LlamaForCausalLM.from_pretrained(english_model)
    before_in, before_out = (w.detach().clone() for w in (model.get_input_embeddings().weight,
                                                          model.get_output_embeddings().weight))
    extension = json.loads((extended / "extension.json").read_text())
    size = len(AutoTokenizer.from_pretrained(extended))
    resize_for_extension(model, extension, -(-size // 64) * 64)
    assert model.config.vocab_size % 64 == 0 and model.config.vocab_size >= size
    after_in, after_out = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    assert torch.equal(after_in[:len(before_in)], before_in) and torch.equal(after_out[:len(before_out)], before_out)
    for entry in extension["added"][::53]:
        pieces = entry["base_pieces"]
        assert torch.allclose(after_in[entry["id"]], before_in[pieces].mean(dim=0), atol=1e-7)
        assert torch.allclose(after_out[entry["id"]], before_out[pieces].mean(dim=0), atol=1e-7)


@pytest.fixture(scope="module")
def packed_zh(extended, data_dir, tmp_path_factory):
    work = tmp_path_factory.mktemp("packed-zh")
    (work / "pack.yaml").write_text(yaml.safe_dump({"train_sources": sources(data_dir, ZH)}))
    recipes.pack.main(["--config", str(work / "pack.yaml"), "--tokenizer_name_or_path", str(extended),
                       "--output_dir", str(work / "packed"), "--block_size", "64", "--max_documents", "400"])
    return work / "packed"


def continue_args(model_dir, packed_dir, out, *extra):
    return ["--config", str(REPO_ROOT / "configs/pretrain/tiny_continue.yaml"), "--model_name_or_path",
            str(model_dir), "--dataset_path", str(packed_dir), "--output_dir", str(out), "--report_to", "none",
            "--max_steps", "2", "--eval_steps", "2", "--save_steps", "2", "--per_device_train_batch_size", "4",
            "--warmup_steps", "1", *extra]


def test_continued_pretraining_on_data_packed_with_the_extended_tokenizer(english_model, extended, packed_zh,
                                                                         tmp_path):
    recipes.pretrain.main(continue_args(english_model, packed_zh, tmp_path / "continued"))
    saved = LlamaForCausalLM.from_pretrained(tmp_path / "continued")
    assert saved.config.vocab_size == -(-len(AutoTokenizer.from_pretrained(extended)) // 64) * 64
    assert len(AutoTokenizer.from_pretrained(tmp_path / "continued")) == len(AutoTokenizer.from_pretrained(extended))


@pytest.mark.slow
@TWO_PROCESSES
def test_zero3_two_processes_grow_the_embeddings_and_save(english_model, extended, packed_zh, tmp_path):
    """Under ZeRO-3 the model loads sharded; the rows are gathered for the mean init and the saved model has them."""
    out = tmp_path / "z3"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(REPO_ROOT / "launch/accelerate/zero3.yaml"), "--num_processes", "2", "--main_process_port", "29641",
           str(REPO_ROOT / "recipes/pretrain.py"),
           *continue_args(english_model, packed_zh, out, "--train_only_embeddings", "true", "--learning_rate",
                          "1e-12")]  # (almost) no update: the saved rows are still the initial ones
    proc = warmproc.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "[rank 1] ZeRO-3 partition" in proc.stdout + proc.stderr
    saved, start = load_file(out / "model.safetensors"), load_file(english_model / "model.safetensors")
    entry = json.loads((extended / "extension.json").read_text())["added"][7]
    for key in ("model.embed_tokens.weight", "lm_head.weight"):
        assert torch.allclose(saved[key][entry["id"]], start[key][entry["base_pieces"]].mean(dim=0), atol=1e-5)
