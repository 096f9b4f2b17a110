"""make classify on the shipped ChnSentiCorp reviews with the tiny model: it learns (beats the majority class on the
held-out test split), augments train only, stops early keeping the best checkpoint, trains and merges LoRA / AdaLoRA /
IA3 with the same logits, resumes where it was killed, and loads in `pipeline("text-classification")`."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

import recipes.classify
from llm_recipes.classification import ClassifyDataArguments, load_splits
from llm_recipes.training import CHECKPOINT_COMPLETE
from testkit import (FAMILIES, REPO_ROOT, TWO_PROCESSES, assert_resumed_at, assert_resumed_batches,
                     assert_same_losses, data_order, history, kill_once_exists, newest_checkpoint_step, run_main)
import warmproc

CONFIG = str(REPO_ROOT / "configs/classify/tiny.yaml")


def classify_args(model, out, *extra):
    return ["--config", CONFIG, "--model_name_or_path", str(model), "--output_dir", str(out), "--report_to", "none",
            *extra]


@pytest.mark.slow
def test_full_fine_tune_beats_the_majority_class_and_loads_in_a_pipeline(tiny_chat_model_dir, tmp_path):
    out = tmp_path / "cls"
    recipes.classify.main(classify_args(tiny_chat_model_dir, out))
    losses = [e["loss"] for e in history(out) if "loss" in e]
    assert losses[-1] < losses[0] - 0.1, losses
    results = json.loads((out / "eval_results.json").read_text())
    test = results["test"]
    assert test["rows"] > 700 and test["accuracy"] > test["majority_baseline"]["accuracy"] + 0.05, test
    assert {"precision_macro", "recall_macro", "f1_macro", "f1_per_class", "confusion_matrix"} <= test.keys()
    assert (out / "confusion_test.png").exists() and "| **negative** |" in (out / "classify_report.md").read_text()
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"} and config["pad_token_id"] is not None

    classifier = pipeline("text-classification", model=str(out))
    answers = classifier(["房间很干净，服务也很好，下次还来。", "太差了，房间又脏又吵，再也不来了。"])
    assert {a["label"] for a in answers} <= {"negative", "positive"}


def test_augmentation_touches_train_only(data_dir):
    args = dict(train_file=str(data_dir / "chnsenticorp/ChnSentiCorp_htl_all.csv"), text_column="review",
                class_names=["negative", "positive"], drop_empty_text=True, language="zh", train_fraction=0.1)
    plain, names, _ = load_splits(ClassifyDataArguments(**args), seed=7)
    augmented, _, report = load_splits(ClassifyDataArguments(**args, augment_copies=2, augment_rate=0.2), seed=7)
    assert names == ["negative", "positive"] and report["dropped_empty_text"]
    for split in ("validation", "test"):  # the held-out splits are the same rows, never augmented
        assert list(augmented[split]["text"]) == list(plain[split]["text"]) and not any(augmented[split]["augmented"])
    train = augmented["train"]
    originals = [t for t, a in zip(train["text"], train["augmented"]) if not a]
    copies = [t for t, a in zip(train["text"], train["augmented"]) if a]
    assert originals == list(plain["train"]["text"]) and len(copies) == report["train_augmented"] > len(originals)
    assert set(copies) - set(originals) and not set(copies) & {*plain["validation"]["text"], *plain["test"]["text"]}


@pytest.mark.slow
def test_early_stopping_keeps_the_best_checkpoint(tiny_chat_model_dir, tmp_path):
    out = tmp_path / "es"  # learning rate 0: the metric never improves after the first evaluation
    recipes.classify.main(classify_args(tiny_chat_model_dir, out, "--learning_rate", "0", "--eval_steps", "10",
                                        "--save_steps", "10", "--early_stopping_patience", "1", "--train_fraction",
                                        "0.2"))
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 20 and state["best_model_checkpoint"].endswith("checkpoint-10")


def _adapter_trained(out, peft_type) -> bool:
    weights = load_file(out / "adapter_model.safetensors")
    if peft_type == "ia3":  # IA3 vectors start at 1
        return any((w - 1).abs().max() > 1e-4 for k, w in weights.items() if "ia3" in k)
    return any(w.abs().max() > 1e-6 for k, w in weights.items() if "lora_B" in k)  # lora_B starts at 0


@pytest.mark.slow
@pytest.mark.parametrize("peft_type", ["lora", "adalora", "ia3"])
def test_peft_variants_train_and_merge_with_the_same_logits(peft_type, tiny_chat_model_dir, tmp_path):
    from peft import AutoPeftModelForSequenceClassification

    out = tmp_path / peft_type
    recipes.classify.main(classify_args(tiny_chat_model_dir, out, "--peft_type", peft_type, "--max_steps", "30",
                                        "--eval_steps", "30", "--save_steps", "30", "--learning_rate", "3e-3",
                                        "--train_fraction", "0.2"))
    assert _adapter_trained(out, peft_type)
    head = [k for k in load_file(out / "adapter_model.safetensors") if "score" in k]
    assert head, "the classification head is saved with the adapter (modules_to_save)"
    tokenizer = AutoTokenizer.from_pretrained(out)
    batch = tokenizer(["房间很干净", "太差了，又脏又吵。"], padding=True, return_tensors="pt")
    adapter = AutoPeftModelForSequenceClassification.from_pretrained(out).eval()
    merged = AutoModelForSequenceClassification.from_pretrained(out / "merged").eval()
    with torch.no_grad():
        assert torch.allclose(adapter(**batch).logits, merged(**batch).logits, atol=1e-4)


@pytest.mark.slow  # a 128k-152k vocabulary: loading, tokenizing and saving cost seconds a family
@pytest.mark.parametrize("family", FAMILIES)
def test_a_family_base_classifies_with_lora_and_keeps_its_tokenizer(family, family_model_dir, tmp_path):
    """Llama 3.1 (no pad token: its eos pads), Qwen 2.5, Llama 2 as the base of a LoRA classifier: it trains, the
    saved tokenizer is the family's (nothing of ours added), and the merged model loads in a pipeline."""
    base, out = family_model_dir(family), tmp_path / "cls"
    recipes.classify.main(classify_args(base, out, "--peft_type", "lora", "--max_steps", "4", "--eval_steps", "4",
                                        "--save_steps", "4", "--train_fraction", "0.05", "--max_length", "64"))
    assert _adapter_trained(out, "lora")
    original, saved = AutoTokenizer.from_pretrained(base), AutoTokenizer.from_pretrained(out)
    assert len(saved) == len(original) and saved.chat_template == original.chat_template
    assert set(saved.all_special_tokens) == set(original.all_special_tokens) and saved.pad_token is not None
    config = json.loads((out / "merged" / "config.json").read_text())
    assert config["pad_token_id"] == saved.pad_token_id and config["id2label"] == {"0": "negative", "1": "positive"}
    answers = pipeline("text-classification", model=str(out / "merged"))(["房间很干净，服务也很好。", "太差了。"])
    assert {a["label"] for a in answers} <= {"negative", "positive"}


def run_classify(model, out, *extra):
    return warmproc.popen([sys.executable, str(REPO_ROOT / "recipes/classify.py"), *classify_args(model, out, *extra)],
                          cwd=REPO_ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, start_new_session=True)


@pytest.mark.slow
def test_kill_and_resume_reproduces_the_uninterrupted_run(tiny_chat_model_dir, tmp_path, capsys, caplog):
    # held-out splits of 2 % (155 reviews each): the run only has to be reproduced, not to score well
    common = ["--max_steps", "40", "--save_steps", "10", "--eval_steps", "10", "--logging_steps", "1",
              "--train_fraction", "0.2", "--log_data_order", "true", "--save_total_limit", "5",
              "--validation_split_size", "0.02", "--test_split_size", "0.02"]
    baseline, killed = tmp_path / "baseline", tmp_path / "killed"
    recipes.classify.main(classify_args(tiny_chat_model_dir, baseline, *common))  # in this process: a start fewer
    kill_once_exists(run_classify(tiny_chat_model_dir, killed, *common), killed / "checkpoint-20" / CHECKPOINT_COMPLETE,
                     group=True)
    assert not (killed / "eval_results.json").exists(), "the run finished before it was killed"
    checkpoint, before = newest_checkpoint_step(killed), len(data_order(killed))
    out = run_main("classify", classify_args(tiny_chat_model_dir, killed, *common, "--resume_from_checkpoint",
                                             "latest"), capsys, caplog)
    assert_resumed_at(out, 40, checkpoint)
    assert_resumed_batches(baseline, killed, before, checkpoint, 40)
    assert_same_losses(baseline, killed, checkpoint)
    results = [json.loads((run / "eval_results.json").read_text())["test"] for run in (baseline, killed)]
    assert results[0]["confusion_matrix"] == results[1]["confusion_matrix"]


@pytest.mark.parametrize("config", sorted(p.name for p in (REPO_ROOT / "configs/classify").glob("*.yaml")))
def test_every_classify_recipe_parses(config):
    data_args, model_args, args = recipes.classify.make_parser().parse(["--config",
                                                                        str(REPO_ROOT / "configs/classify" / config)])
    assert model_args.model_name_or_path and data_args.train_file and args.output_dir
    assert data_args.class_names and len(data_args.class_names) == 2


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory, data_dir):
    """A random-init tiny BERT with a WordPiece tokenizer trained on the shipped SST-2 text: the stand-in for an
    encoder from the Hub (bert-base-uncased in configs/classify/bert_imdb.yaml)."""
    import pandas as pd
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    out = tmp_path_factory.mktemp("bert") / "bert"
    texts = pd.read_csv(data_dir / "sst2/sst2_glue_dev.tsv", sep="\t", quoting=3)["sentence"].tolist()
    wordpiece = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    wordpiece.normalizer = normalizers.BertNormalizer(lowercase=True)
    wordpiece.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    wordpiece.train_from_iterator(texts, trainers.WordPieceTrainer(
        vocab_size=1000, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
    cls, sep = wordpiece.token_to_id("[CLS]"), wordpiece.token_to_id("[SEP]")
    wordpiece.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=wordpiece, unk_token="[UNK]", pad_token="[PAD]",
                                        cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=wordpiece.get_vocab_size(), hidden_size=64, num_hidden_layers=2,
                         num_attention_heads=2, intermediate_size=128, max_position_embeddings=128)).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.mark.slow
def test_an_encoder_trains_with_lora_and_its_classifier_head(tiny_bert_dir, data_dir, tmp_path):
    out = tmp_path / "bert"
    recipes.classify.main(["--config", str(REPO_ROOT / "configs/classify/sst2_en.yaml"), "--model_name_or_path",
                           str(tiny_bert_dir), "--output_dir", str(out), "--report_to", "none", "--peft_type", "lora",
                           "--num_train_epochs", "1", "--augment_copies", "0", "--learning_rate", "3e-3"])
    saved = load_file(out / "adapter_model.safetensors")
    assert any("classifier" in k for k in saved) and _adapter_trained(out, "lora")
    config = json.loads((out / "merged" / "config.json").read_text())
    assert config["architectures"] == ["BertForSequenceClassification"]
    assert config["id2label"] == {"0": "negative", "1": "positive"}


@pytest.mark.slow
@TWO_PROCESSES
def test_zero3_two_processes_train_and_score_every_held_out_row_once(tiny_chat_model_dir, tmp_path):
    out = tmp_path / "z3"
    done = warmproc.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                         str(REPO_ROOT / "launch/accelerate/zero3.yaml"), "--num_processes", "2",
                         "--main_process_port", "29671", str(REPO_ROOT / "recipes/classify.py"),
                         *classify_args(tiny_chat_model_dir, out, "--max_steps", "10", "--eval_steps", "10",
                                        "--save_steps", "10", "--train_fraction", "0.2")],
                        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for rank in (0, 1):
        assert f"[rank {rank}] ZeRO-3 partition: holds" in done.stdout + done.stderr
    results = json.loads((out / "eval_results.json").read_text())
    for split in ("validation", "test"):  # gathered from both ranks, without the sampler's padding
        scored = sum(map(sum, results[split]["confusion_matrix"]))
        assert results[split]["rows"] == results["data"]["rows"][split] == scored
    assert AutoModelForSequenceClassification.from_pretrained(out).config.id2label[1] == "positive"
