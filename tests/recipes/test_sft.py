import importlib.util
import json
import os
import sys

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM, LogitsProcessorList

import recipes.merge_lora
import recipes.sft
from testkit import (ACCELERATE, FAMILIES, FAMILY_EXPECTED, REPO_ROOT, SYSTEM, TURNS, TWO_PROCESSES, ForceTokenAt,
                     assert_resumed_at, assert_resumed_batches,
                     assert_same_losses, assert_same_update, data_order, kill_once_exists, newest_checkpoint_step,
                     run_main, run_recipe_error, start_recipe)
import warmproc
from safetensors.torch import load_file

from llm_recipes.model import ModelArguments, build_llama_config

EN = "alpaca_gpt4_en_demo/alpaca_en_demo.json"
ZH = "alpaca_zh_demo/alpaca_zh_demo.json"
SHAREGPT = "fastchat_sharegpt/dummy_conversation.json"


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory, tiny_tokenizer_dir):
    """A random-init tiny LLaMA with the tiny ChatML tokenizer: the stand-in for outputs/tiny/pretrain."""
    out = tmp_path_factory.mktemp("base") / "base"
    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    torch.manual_seed(0)
    model = LlamaForCausalLM(build_llama_config(ModelArguments(model_preset="tiny"), tokenizer=tokenizer))
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def base_vocab(base_dir):
    return json.loads((base_dir / "config.json").read_text())["vocab_size"]


def recipe_config(tmp_path, data_dir, preset="tiny", sources=((EN, 120), (ZH, 120)), **overrides):
    """configs/sft/<preset>.yaml with the test's data subset and overrides, written next to the run."""
    config = yaml.safe_load((REPO_ROOT / f"configs/sft/{preset}.yaml").read_text())
    config["datasets"] = [{"path": str(data_dir / p), "max_samples": n} for p, n in sources]
    # truncate: the tests' small subsets keep their size (tiny_lora.yaml drops long conversations for the demo)
    config.update({"report_to": "none", "max_length": 256, "per_device_train_batch_size": 2, "logging_steps": 5,
                   "sample_prompt": None, "long_conversations": "truncate", **overrides})
    path = tmp_path / f"{preset}.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True))
    return path


def sft_args(config, base_dir, out, *extra):
    return ["--config", str(config), "--model_name_or_path", str(base_dir), "--output_dir", str(out), *extra]


def build(config, base_dir, out, *extra):
    """The recipe's own parser and trainer construction, without training."""
    recipe = recipes.sft
    script_args, args, model_args = recipe.make_parser().parse(sft_args(config, base_dir, out, *extra))
    trainer, _ = recipe.build_trainer(script_args, args, model_args)
    return trainer


def eval_losses(out):
    state = json.loads((out / "trainer_state.json").read_text())
    return [e["eval_loss"] for e in state["log_history"] if "eval_loss" in e]


# --- what the loss sees -----------------------------------------------------------------------------------------------


def test_assistant_only_labels_exactly_on_assistant_tokens(base_dir, data_dir, tmp_path):
    """labels == input_ids exactly on the assistant content + its <|im_end|>; -100 on system, user and template."""
    share = json.loads((data_dir / SHAREGPT).read_text())
    roles = {"human": "user", "gpt": "assistant"}
    records = [{"messages": [{"role": "system", "content": "You are a helpful assistant."}]
                + [{"role": roles[t["from"]], "content": t["value"]} for t in r["conversations"]]}
               for r in share if len(r["conversations"]) >= 4][:20]
    zh = json.loads((data_dir / ZH).read_text())[:20]
    records += [{"messages": [{"role": "user", "content": r["instruction"] + r["input"]},
                              {"role": "assistant", "content": r["output"]}]} for r in zh]
    src = tmp_path / "chats.jsonl"
    src.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n")
    config = recipe_config(tmp_path, data_dir, sources=(), packing=False, max_length=2048, test_split_size=0,
                           eval_strategy="no", load_best_model_at_end=False, early_stopping_patience=None)
    cfg = yaml.safe_load(config.read_text())
    cfg["datasets"] = [{"path": str(src), "format": "messages"}]
    config.write_text(yaml.safe_dump(cfg, allow_unicode=True))
    trainer = build(config, base_dir, tmp_path / "out")
    tokenizer = trainer.processing_class
    prepared = {tuple(r["input_ids"]): r["labels"] for r in trainer.train_dataset}
    assert len(prepared) == len(records)
    masked_roles = 0
    for record in records:
        text = tokenizer.apply_chat_template(record["messages"], tokenize=False)
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        labels = prepared[tuple(enc["input_ids"])]
        spans, cursor = [], 0
        for m in record["messages"]:
            header = f"<|im_start|>{m['role']}\n"
            start = text.index(header, cursor) + len(header)
            end = start + len(m["content"]) + len("<|im_end|>")
            cursor = end
            if m["role"] == "assistant":
                spans.append((start, end))
            else:
                masked_roles += 1
        expected = [tok if any(s <= a < e for s, e in spans) else -100
                    for tok, (a, _) in zip(enc["input_ids"], enc["offset_mapping"])]
        assert labels == expected
        trained = tokenizer.decode([t for t in labels if t != -100])
        assert trained == "".join(m["content"] + "<|im_end|>" for m in record["messages"] if m["role"] == "assistant")
    assert masked_roles >= 60  # system and user turns were really there to be masked


def test_packing_fills_batches_without_cross_contamination(base_dir, data_dir, tmp_path):
    config = recipe_config(tmp_path, data_dir, sources=((EN, 300),), test_split_size=0, eval_strategy="no",
                           load_best_model_at_end=False, early_stopping_patience=None,
                           per_device_train_batch_size=4)
    trainer = build(config, base_dir, tmp_path / "out")
    real = slots = 0
    batches = []
    for batch in trainer.get_train_dataloader():
        real, slots = real + int(batch["real_tokens"]), slots + int(batch["token_slots"])
        batches.append(batch)
    assert real / slots > 0.95, real / slots  # bfd bins of max_length are > 95% full on the shipped alpaca subset

    model = trainer.model.eval()
    batch = {k: v for k, v in batches[0].items() if k not in ("labels", "real_tokens", "token_slots")}
    starts = (batch["position_ids"][0] == 0).nonzero().flatten().tolist() + [batch["input_ids"].shape[1]]
    assert batch["input_ids"].shape[0] == 1 and len(starts) - 1 >= 4  # one flattened row holding several samples
    with torch.no_grad():
        packed = model(**batch, use_cache=False).logits[0]  # as SFTTrainer.compute_loss runs it
        cached = model(**batch, use_cache=True).logits[0]
        worst, worst_cached = 0.0, 0.0
        for a, b in zip(starts, starts[1:]):
            alone = model(input_ids=batch["input_ids"][:, a:b]).logits[0]
            worst = max(worst, (packed[a:b] - alone).abs().max().item())
            worst_cached = max(worst_cached, (cached[a:b] - alone).abs().max().item())
    print(f"\nreal-token share {real / slots:.4f}; packed vs alone max |logit diff| {worst:.2e}; "
          f"with KV cache {worst_cached:.2f}")
    assert worst < 1e-4, worst
    assert worst_cached > 1e-2  # the same check catches contamination: with a KV cache the samples attend to each other


# --- training runs ----------------------------------------------------------------------------------------------------


def test_full_sft_reduces_held_out_loss_and_stops_at_im_end(base_dir, data_dir, tmp_path):
    out = tmp_path / "full"
    config = recipe_config(tmp_path, data_dir, max_steps=40, eval_steps=40, save_steps=40, eval_on_start=True,
                           learning_rate=3e-3, sample_prompt="Who are you?", sample_max_new_tokens=8)
    recipes.sft.main(sft_args(config, base_dir, out))
    first, *_, last = eval_losses(out)
    assert last < first - 1.0, (first, last)  # held-out en + zh instructions (never trained on)
    report = json.loads((out / "data_report.json").read_text())
    assert report["test"] == 12 and report["invalid_dropped"] == 0 and len(report["sources"]) == 2
    state = json.loads((out / "trainer_state.json").read_text())
    logged = [e for e in state["log_history"] if "real_token_share" in e]
    assert logged and all(0.5 < e["real_token_share"] <= 1.0 and e["tokens_per_second"] > 0 for e in logged)
    for name in ("resolved_config.yaml", "run_info.json", "model.safetensors", "chat_template.jinja",
                 "sample_generation.json", "eval_results.json"):
        assert (out / name).exists(), name

    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert model.generation_config.eos_token_id == [tokenizer.eos_token_id, im_end]
    assert model.config.use_cache is True
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Who are you?"}], add_generation_prompt=True,
                                           return_dict=True, return_tensors="pt")
    n = prompt["input_ids"].shape[1]
    force = LogitsProcessorList([ForceTokenAt(im_end, n + 2)])
    out_ids = model.generate(**prompt, max_new_tokens=20, do_sample=False, logits_processor=force)
    assert out_ids[0, n:].tolist()[-1] == im_end and out_ids.shape[1] == n + 3  # stopped at <|im_end|>
    model.generation_config.eos_token_id = tokenizer.eos_token_id  # without it generation runs on past the turn
    longer = model.generate(**prompt, max_new_tokens=20, do_sample=False, logits_processor=force)
    assert longer.shape[1] > n + 3
    sample = json.loads((out / "sample_generation.json").read_text())
    assert sample["rendered_prompt"].endswith("<|im_start|>assistant\n") and sample["new_tokens"] > 0


def test_lora_sft_adapter_and_merge(base_dir, data_dir, tmp_path):
    from peft import AutoPeftModelForCausalLM

    out = tmp_path / "lora"
    config = recipe_config(tmp_path, data_dir, preset="tiny_lora", max_steps=30, eval_steps=30, save_steps=30,
                           eval_on_start=True, use_rslora=True)  # the YAML switch reaches peft
    recipes.sft.main(sft_args(config, base_dir, out))
    first, *_, last = eval_losses(out)
    assert last < first - 0.5, (first, last)
    assert (out / "adapter_config.json").exists() and (out / "adapter_model.safetensors").exists()
    assert not (out / "model.safetensors").exists()
    adapter_cfg = json.loads((out / "adapter_config.json").read_text())
    assert adapter_cfg["r"] == 16 and set(adapter_cfg["target_modules"]) >= {"q_proj", "down_proj"}
    assert adapter_cfg["use_rslora"] and not adapter_cfg["use_dora"]
    dora = build(config, base_dir, tmp_path / "dora", "--use_dora", "true", "--lora_dropout", "0.1").model.peft_config
    assert dora["default"].use_dora and dora["default"].lora_dropout == 0.1

    merged_dir = recipes.merge_lora.main(["--adapter_dir", str(out), "--output_dir", str(tmp_path / "merged")])
    adapter = AutoPeftModelForCausalLM.from_pretrained(out).eval()
    merged = AutoModelForCausalLM.from_pretrained(merged_dir).eval()
    base = AutoModelForCausalLM.from_pretrained(base_dir).eval()
    x = torch.randint(0, merged.config.vocab_size, (2, 48), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, m, b = adapter(x).logits, merged(x).logits, base(x).logits
    assert (a - m).abs().max() < 1e-4
    assert (a - b).abs().max() > 1e-2  # the trained adapter changes the model: the comparison is not vacuous
    tok = AutoTokenizer.from_pretrained(merged_dir)
    assert merged.generation_config.eos_token_id == [tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")]


def test_merge_non_zero_initialised_adapter(base_dir, tmp_path):
    """peft's default init is a no-op adapter (B = 0): merge a random one, so equality proves the merge."""
    from peft import LoraConfig, PeftModel, get_peft_model

    torch.manual_seed(1)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir),
                           LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", init_lora_weights=False,
                                      use_rslora=True, use_dora=True, task_type="CAUSAL_LM"))
    model.save_pretrained(tmp_path / "adapter")
    merged_dir = recipes.merge_lora.main(["--adapter_dir", str(tmp_path / "adapter"), "--output_dir",
                                                 str(tmp_path / "merged")])
    assert (merged_dir / "model.safetensors").exists() and (merged_dir / "tokenizer.json").exists()
    adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), tmp_path / "adapter").eval()
    merged = AutoModelForCausalLM.from_pretrained(merged_dir).eval()
    base = AutoModelForCausalLM.from_pretrained(base_dir).eval()
    x = torch.randint(0, base.config.vocab_size, (2, 64), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, m, b = adapter(x).logits, merged(x).logits, base(x).logits
    assert (a - m).abs().max() < 1e-4 and (a - b).abs().max() > 1e-2


def test_early_stopping_keeps_best_checkpoint(base_dir, data_dir, tmp_path):
    out = tmp_path / "es"
    # an improvement must exceed 100 nats: the second evaluation never counts, so patience 1 stops the run there
    config = recipe_config(tmp_path, data_dir, sources=((ZH, 60),), max_steps=40, eval_steps=2, save_steps=2,
                           early_stopping_patience=1, early_stopping_threshold=100.0, save_total_limit=2,
                           eval_on_start=False)
    recipes.sft.main(sft_args(config, base_dir, out))
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 4  # stopped at the second evaluation, not at max_steps 40
    evals = {e["step"]: e["eval_loss"] for e in state["log_history"] if "eval_loss" in e}
    best_step = min(evals, key=evals.get)
    assert state["best_model_checkpoint"] == str(out / f"checkpoint-{best_step}")
    assert (out / f"checkpoint-{best_step}").is_dir()  # the best checkpoint is kept
    final = AutoModelForCausalLM.from_pretrained(out)
    best = AutoModelForCausalLM.from_pretrained(out / f"checkpoint-{best_step}")
    assert all(torch.equal(p, q) for p, q in zip(final.state_dict().values(), best.state_dict().values()))


# --- refusals ---------------------------------------------------------------------------------------------------------


def test_qlora_trains_or_stops_with_a_clear_message(base_dir, data_dir, tmp_path, capsys):
    from types import SimpleNamespace

    from trl import ModelConfig

    from llm_recipes.adapters import check_quantized_training
    from llm_recipes.config import ConfigError

    recipe = recipes.sft
    config = recipe_config(tmp_path, data_dir, preset="tiny_lora", sources=((ZH, 40),), max_steps=10, eval_steps=10,
                           save_steps=10, eval_on_start=True, early_stopping_patience=None)
    args = sft_args(config, base_dir, tmp_path / "q", "--load_in_4bit", "true")
    try:  # what the recipe itself checks first: is bitsandbytes there, and does a 4-bit round trip run here?
        check_quantized_training(ModelConfig(load_in_4bit=True, use_peft=True), SimpleNamespace(deepspeed_plugin=None))
    except ConfigError as e:
        err = run_recipe_error("sft", args, capsys)
        assert str(e) in err and "Traceback" not in err and len(err.strip().splitlines()) == 2
        if importlib.util.find_spec("bitsandbytes") is None:
            assert "load_in_4bit (QLoRA) needs bitsandbytes, which is not installed" in err
        return
    trainer = recipe.main(args)
    from bitsandbytes.nn import Linear4bit

    quantized = [m for m in trainer.model.modules() if isinstance(m, Linear4bit)]
    assert len(quantized) == 14  # 7 linear layers x 2 blocks really are 4-bit
    first, *_, last = eval_losses(tmp_path / "q")
    assert last < first - 0.3, (first, last)
    assert (tmp_path / "q" / "adapter_model.safetensors").exists()


def test_qlora_without_bitsandbytes_is_one_clear_line(base_dir, data_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # as on a machine where it is not installed
    config = recipe_config(tmp_path, data_dir, preset="tiny_lora")
    err = run_recipe_error("sft", sft_args(config, base_dir, tmp_path / "q", "--load_in_4bit", "true"), capsys)
    assert "error: load_in_4bit (QLoRA) needs bitsandbytes, which is not installed" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 2


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--lora_rr", "8"], "unknown key '--lora_rr' (did you mean 'lora_r'?)"),
        (["--load_best_model_at_end", "false"], "early_stopping_patience needs load_best_model_at_end: true"),
        (["--load_in_4bit", "true"], "load_in_4bit / load_in_8bit train adapters only: set use_peft: true"),
        (["--model_name_or_path", "/nonexistent/model"], "/nonexistent/model"),
        (["--eval_strategy", "no"], "load_best_model_at_end requires the save and eval strategy to match"),
    ],
)
def test_bad_config(base_dir, data_dir, tmp_path, capsys, extra, message):
    config = recipe_config(tmp_path, data_dir)
    err = run_recipe_error("sft", sft_args(config, base_dir, tmp_path / "bad", *extra), capsys)
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 2


def test_no_eval_strategy_trains_without_the_yaml_eval_on_start(base_dir, data_dir, tmp_path):
    """`--eval_strategy no` on a recipe that keeps eval_on_start: true trained into a Trainer traceback before."""
    config = recipe_config(tmp_path, data_dir, sources=((EN, 40),), eval_strategy="no", eval_on_start=True,
                           load_best_model_at_end=False, early_stopping_patience=None, max_steps=2, save_steps=2)
    trainer = recipes.sft.main(sft_args(config, base_dir, tmp_path / "out"))
    assert trainer.state.global_step == 2 and not trainer.args.eval_on_start


def test_invalid_records_stop_the_recipe_naming_file_and_record(base_dir, data_dir, tmp_path, capsys):
    records = json.loads((data_dir / EN).read_text())[:100]
    records[42]["output"] = ""
    records[57]["instruction"] = None
    src = tmp_path / "broken.json"
    src.write_text(json.dumps(records))
    config = recipe_config(tmp_path, data_dir, sources=())
    cfg = yaml.safe_load(config.read_text())
    cfg["datasets"] = [{"path": str(src), "format": "alpaca"}]
    config.write_text(yaml.safe_dump(cfg))
    err = run_recipe_error("sft", sft_args(config, base_dir, tmp_path / "bad"), capsys)
    assert f"{src}: 2 of 100 records invalid (2.0% > max_invalid_share 1.0%)" in err
    assert "record 42: message 1: empty assistant turn" in err and "record 57: missing field 'instruction'" in err


# --- two processes, DeepSpeed ZeRO-3 on CPU ---------------------------------------------------------------------------


def launch_zero3(config, base_dir, out, port, *extra):
    cmd = [*ACCELERATE, "--config_file", str(REPO_ROOT / "launch/accelerate/zero3.yaml"), "--num_processes", "2",
           "--main_process_port", str(port), str(REPO_ROOT / "recipes/sft.py"),
           *sft_args(config, base_dir, out, *extra)]
    proc = warmproc.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
                        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


ZERO3_RUN = dict(sources=((EN, 40), (ZH, 40)), max_steps=4, eval_steps=4, save_steps=4, logging_steps=2,
                 early_stopping_patience=None, load_best_model_at_end=False, eval_on_start=False)


@pytest.mark.slow
@TWO_PROCESSES
def test_zero3_two_processes_full_sft_saves_a_reloadable_model(base_dir, data_dir, tmp_path):
    out = tmp_path / "z3"
    output = launch_zero3(recipe_config(tmp_path, data_dir, **ZERO3_RUN), base_dir, out, 29651)
    for rank in (0, 1):  # the loaded model really is sharded: each rank holds half of it
        line = next(l for l in output.splitlines() if f"[rank {rank}] ZeRO-3 partition" in l)
        held, total = (int(x.replace(",", "")) for x in line.split("holds ")[1].split(" parameter")[0].split(" of "))
        assert abs(held / total - 0.5) < 0.01, line
    # checked here, in a separate plain process: the consolidated weights reload and differ from the base
    saved = AutoModelForCausalLM.from_pretrained(out)
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    x = torch.randint(0, base.config.vocab_size, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (saved(x).logits - base(x).logits).abs().max().item()
    assert 1e-4 < diff < 50 and torch.isfinite(saved(x).logits).all()
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 4 and any("eval_loss" in e for e in state["log_history"])
    run_info = json.loads((out / "run_info.json").read_text())
    assert run_info["recipe"] == "sft"


@pytest.mark.slow
@TWO_PROCESSES
def test_zero3_two_processes_lora_saves_an_adapter(base_dir, data_dir, tmp_path):
    from peft import AutoPeftModelForCausalLM

    out = tmp_path / "z3lora"
    launch_zero3(recipe_config(tmp_path, data_dir, preset="tiny_lora", **ZERO3_RUN), base_dir, out, 29652)
    assert (out / "adapter_model.safetensors").exists() and not (out / "model.safetensors").exists()
    saved = load_file(out / "adapter_model.safetensors")
    assert saved and all(t.numel() > 0 for t in saved.values())  # gathered, not ZeRO-3's empty placeholders
    head = next(t for k, t in saved.items() if "lm_head" in k)
    assert tuple(head.shape) == (base_vocab(base_dir), 64)  # modules_to_save: the full trained LM head
    adapter = AutoPeftModelForCausalLM.from_pretrained(out).eval()
    base = AutoModelForCausalLM.from_pretrained(base_dir).eval()
    x = torch.randint(0, base.config.vocab_size, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (adapter(x).logits - base(x).logits).abs().max() > 1e-4  # trained adapter weights, not empty shards


@pytest.mark.parametrize("config", sorted(p.name for p in (REPO_ROOT / "configs/sft").glob("*.yaml")))
def test_every_sft_recipe_parses_and_loads_its_mixture(config, data_dir):
    from llm_recipes.chat_data import load_mixture

    recipe = recipes.sft
    path = REPO_ROOT / "configs/sft" / config
    byo = yaml.safe_load(path.read_text())["model_name_or_path"] is None  # a model you bring: named on the CLI
    script_args, args, model_args = recipe.make_parser().parse(
        ["--config", str(path), *(["--model_name_or_path", "org/any-model"] if byo else [])])
    recipe.check_combination(script_args, args, model_args)
    data, reports = load_mixture(script_args, seed=args.seed)
    assert len(data["train"]) > 500 and len(data["test"]) > 20 and all(r.invalid == 0 for r in reports)
    assert args.assistant_only_loss and args.packing and args.packing_strategy == "bfd"
    assert (args.deepspeed_plugin is None) and args.eval_strategy == "steps"


# --- kill and resume ---------------------------------------------------------------------------------------------------


def run_sft(config, base_dir, out, *extra, processes=1, port=29661):
    return start_recipe("sft", sft_args(config, base_dir, out, *extra), processes, port)


@pytest.mark.slow
@pytest.mark.parametrize("preset, processes",
                         [("tiny", 1), ("tiny_lora", 1), pytest.param("tiny", 2, marks=TWO_PROCESSES)],
                         ids=["full", "lora", "full-zero3-2proc"])
def test_kill_and_resume_continues_at_the_checkpoint(preset, processes, base_dir, data_dir, tmp_path, capsys, caplog):
    """SIGKILL (the whole launch) after the second checkpoint, resume `latest`: the resumed process starts at that
    checkpoint's step (first logged step, first batch of every rank), adds exactly the remaining batches in the
    uninterrupted order, and ends with the same losses and weights. With resume_from_checkpoint=None in the recipe
    this test fails."""
    from llm_recipes.training import CHECKPOINT_COMPLETE

    config = recipe_config(tmp_path, data_dir, preset=preset, sources=((EN, 160), (ZH, 160)), eval_strategy="no",
                           eval_on_start=False, load_best_model_at_end=False, early_stopping_patience=None,
                           max_steps=30, save_steps=10, save_total_limit=3, logging_steps=1, log_data_order=True,
                           max_length=128)

    def to_the_end(out, *extra, port):
        """A run nobody kills: in this process on one process (an interpreter start fewer), else launched."""
        if processes == 1:
            return run_main("sft", sft_args(config, base_dir, out, *extra), capsys, caplog)
        output, _ = (proc := run_sft(config, base_dir, out, *extra, processes=processes, port=port)).communicate(
            timeout=600)
        assert proc.returncode == 0, output[-3000:]
        return output

    baseline, killed = tmp_path / "baseline", tmp_path / "killed"
    to_the_end(baseline, port=29661)

    kill_once_exists(run_sft(config, base_dir, killed, processes=processes, port=29662),
                     killed / "checkpoint-20" / CHECKPOINT_COMPLETE, group=True)
    assert not (killed / "trainer_state.json").exists(), "the run finished before it was killed"
    checkpoint = newest_checkpoint_step(killed)
    before = {rank: len(data_order(killed, rank)) for rank in range(processes)}

    out = to_the_end(killed, "--resume_from_checkpoint", "latest", port=29663)
    assert_resumed_at(out, 30, checkpoint)
    for rank in range(processes):
        assert_resumed_batches(baseline, killed, before[rank], checkpoint, 30, rank)
    assert_same_losses(baseline, killed, checkpoint)
    seen = [json.loads((p / "trainer_state.json").read_text())["num_input_tokens_seen"] for p in (baseline, killed)]
    assert seen[0] == seen[1] > 0  # real tokens of every rank, counted on from the checkpoint
    assert_same_update(baseline, killed, checkpoint,
                       "adapter_model.safetensors" if preset == "tiny_lora" else "model.safetensors")


@pytest.mark.slow
@pytest.mark.parametrize("peft_type", ["adalora", "ia3"])
def test_peft_type_switch_trains_adalora_and_ia3(peft_type, base_dir, data_dir, tmp_path):
    """The `peft_type` switch of recipes/classify.py reaches SFT: the adapter is of that type and trains."""
    from peft import AdaLoraConfig, IA3Config

    config = recipe_config(tmp_path, data_dir, preset="tiny_lora", sources=((EN, 40),), max_steps=6, eval_steps=6,
                           save_steps=6, eval_on_start=False, early_stopping_patience=None, max_length=128)
    trainer = build(config, base_dir, tmp_path / peft_type, "--peft_type", peft_type)
    expected = {"adalora": AdaLoraConfig, "ia3": IA3Config}[peft_type]
    assert isinstance(trainer.model.peft_config["default"], expected)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.train()
    after = dict(trainer.model.named_parameters())
    assert any(not torch.equal(before[n], after[n]) for n in before if "lm_head" not in n and "embed" not in n)


# --- a model family brought by the user (Llama 3.1, Qwen 2.5, Llama 2): its own template, masks and stop tokens ------


@pytest.mark.slow  # a 128k-152k vocabulary makes even 2 LoRA steps cost seconds; 6-10 s a family
@pytest.mark.parametrize("family", FAMILIES)
def test_byo_lora_on_a_family_masks_its_answers_keeps_its_shape_and_template_and_stops_at_its_end_of_turn(
        family, family_model_dir, tmp_path, data_dir, capsys, caplog):
    base = family_model_dir(family)
    src = tmp_path / "chats.jsonl"
    chats = [[SYSTEM, *TURNS], TURNS] * 4
    src.write_text("".join(json.dumps({"messages": m}, ensure_ascii=False) + "\n" for m in chats))
    config = recipe_config(tmp_path, data_dir, preset="byo_lora", sources=(), packing=False, test_split_size=0,
                           eval_strategy="no", max_steps=2, save_steps=2, long_conversations="drop", dtype="float32",
                           bf16=False, activation_checkpointing=False, gradient_accumulation_steps=1)
    cfg = yaml.safe_load(config.read_text())
    cfg["datasets"] = [{"path": str(src), "format": "messages"}]
    config.write_text(yaml.safe_dump(cfg, allow_unicode=True))
    out, merged = tmp_path / "sft-lora", tmp_path / "merged"
    trainer = build(config, base, tmp_path / "unused")
    tokenizer = trainer.processing_class
    first = trainer.train_dataset[0]
    trained = tokenizer.decode([t for t in first["labels"] if t != -100])
    assert trained == "".join(FAMILY_EXPECTED[family][1])  # the answers and their end of turn, nothing else

    run_main("sft", sft_args(config, base, out), capsys, caplog)
    recipes.merge_lora.main(["--adapter_dir", str(out), "--output_dir", str(merged)])
    original = AutoTokenizer.from_pretrained(base).chat_template
    for folder in (out, out / "checkpoint-2", merged):
        assert AutoTokenizer.from_pretrained(folder).chat_template == original, folder  # not the training variant
    model = AutoModelForCausalLM.from_pretrained(merged)
    stops = model.generation_config.eos_token_id
    assert tokenizer.convert_ids_to_tokens(stops if isinstance(stops, list) else [stops]) == FAMILY_EXPECTED[family][0]
    # the base's shape kept: frozen embeddings (no lora_modules_to_save), a tied Qwen stays tied, a small adapter
    assert model.config.tie_word_embeddings == AutoModelForCausalLM.from_pretrained(base).config.tie_word_embeddings
    assert (out / "adapter_model.safetensors").stat().st_size < 1_000_000
