import gc
import json
import shutil

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

import recipes.dpo
import recipes.merge_lora
from testkit import (FAMILIES, FAMILY_EXPECTED, REPO_ROOT, TWO_PROCESSES, assert_resumed_at, assert_resumed_batches,
                     assert_same_losses, assert_same_update, data_order, kill_once_exists, newest_checkpoint_step,
                     run_main, run_recipe_error, start_recipe)

EN = "preference/dpo_en_demo.json"
ZH = "preference/dpo_zh_demo.json"


def recipe_config(tmp_path, data_dir, preset="tiny", sources=((EN, 100), (ZH, 100)), **overrides):
    """configs/dpo/<preset>.yaml with the test's data subset and short rows, written next to the run."""
    config = yaml.safe_load((REPO_ROOT / f"configs/dpo/{preset}.yaml").read_text())
    config["datasets"] = [{"path": str(data_dir / p), "max_samples": n} for p, n in sources]
    config.update({"report_to": "none", "max_length": 192, "max_prompt_length": 96, "logging_steps": 5,
                   "per_device_train_batch_size": 4, "max_steps": 40, "eval_steps": 20, "save_steps": 20,
                   **overrides})
    path = tmp_path / f"{preset}.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True))
    return path


def dpo_args(config, model_dir, out, *extra):
    return ["--config", str(config), "--model_name_or_path", str(model_dir), "--output_dir", str(out), *extra]


def train_logs(out):
    state = json.loads((out / "trainer_state.json").read_text())
    return [e for e in state["log_history"] if "loss" in e and "rewards/accuracies" in e]


def parameter_elements() -> int:
    """Every parameter element alive in this process: a second model copy shows up here whoever holds it."""
    gc.collect()
    return sum(p.numel() for p in {id(o): o for o in gc.get_objects() if isinstance(o, torch.nn.Parameter)}.values())


def model_elements(model_dir) -> int:
    return sum(t.numel() for t in load_file(model_dir / "model.safetensors").values())


# --- what DPO is for --------------------------------------------------------------------------------------------------


def test_full_dpo_learns_the_preferences_and_keeps_the_reference_frozen(tiny_chat_model_dir, data_dir, tmp_path):
    """Loss falls and train reward accuracy rises; on held-out pairs the policy's log-likelihood margin
    (chosen - rejected) grows over the start model's and reward accuracy is above 0.5; the reference is a frozen
    second copy whose weights are the start model's after training."""
    out = tmp_path / "dpo"
    config = recipe_config(tmp_path, data_dir, max_steps=60, learning_rate=1e-3, eval_steps=30, save_steps=30)
    before = parameter_elements()
    trainer = recipes.dpo.main(dpo_args(config, tiny_chat_model_dir, out))
    assert parameter_elements() - before == 2 * model_elements(tiny_chat_model_dir)  # policy + reference

    logs = train_logs(out)
    assert logs[-1]["loss"] < logs[0]["loss"] - 0.1, (logs[0], logs[-1])
    assert logs[-1]["rewards/accuracies"] > max(0.6, logs[0]["rewards/accuracies"]), (logs[0], logs[-1])

    metrics = json.loads((out / "dpo_metrics.json").read_text())
    held = metrics["held_out"]
    assert held["pairs"] == metrics["data"]["test"] > 10
    assert held["reward_accuracy"] > 0.5 and held["logp_margin_gain"] > 0, held
    assert held["dpo_logp_margin"] > held["sft_logp_margin"]

    start = load_file(tiny_chat_model_dir / "model.safetensors")
    reference = {k: v.detach() for k, v in trainer.ref_model.state_dict().items()}
    assert reference.keys() == start.keys() and all(torch.equal(reference[k], start[k]) for k in start)
    trained = load_file(out / "model.safetensors")
    assert any(not torch.equal(trained[k], start[k]) for k in start)
    report = (out / "dpo_report.md").read_text()
    assert "SFT (reference)" in report and "prompt trimmed" in report
    assert json.loads((out / "run_info.json").read_text())["recipe"] == "dpo"


def test_data_report_counts_trimmed_dropped_and_truncated_pairs(tiny_chat_model_dir, data_dir, tmp_path):
    """Every pair is accounted for, per source: records = invalid + valid pairs, and the pairs used (max_samples) =
    prompt too long + train + held out; multi-turn English prompts are trimmed, answers cut at max_length counted."""
    script_args, args, model_args = recipes.dpo.make_parser().parse(
        dpo_args(recipe_config(tmp_path, data_dir), tiny_chat_model_dir, tmp_path / "x"))
    _, report = recipes.dpo.build_trainer(script_args, args, model_args)
    for s in report["sources"]:
        assert s["records"] == s["invalid"] + s["conversations"] and s["used"] == 100, s
        assert s["used"] == s["prompt_too_long"] + s["train"] + s["test"], s
        assert s["prompt_too_long"] > 0 and s["answer_truncated"] > 0, s
    en = next(s for s in report["sources"] if s["source"].endswith("dpo_en_demo.json"))
    assert en["prompt_trimmed"] > 0  # multi-turn prompts lose their oldest exchanges instead of the whole pair


def test_long_pairs_drop_keeps_only_pairs_that_fit_and_counts_the_rest(tiny_chat_model_dir, data_dir, tmp_path):
    script_args, args, model_args = recipes.dpo.make_parser().parse(
        [*dpo_args(recipe_config(tmp_path, data_dir), tiny_chat_model_dir, tmp_path / "x"), "--long_pairs", "drop"])
    trainer, report = recipes.dpo.build_trainer(script_args, args, model_args)
    for s in report["sources"]:
        assert s["used"] == s["prompt_too_long"] + s["answer_too_long"] + s["train"] + s["test"], s
        assert s["answer_too_long"] > 0 and s["answer_truncated"] == 0, s
    for ds in (trainer.train_dataset, trainer.eval_dataset):
        assert max(len(p) + max(len(c), len(r)) for p, c, r in
                   zip(ds["prompt_ids"], ds["chosen_ids"], ds["rejected_ids"])) <= args.max_length
    assert len(trainer.train_dataset) == report["train"] and len(trainer.eval_dataset) == report["test"]


# --- LoRA: the reference is the adapter-disabled base -----------------------------------------------------------------


def test_lora_dpo_has_no_second_model_copy_and_merges(tiny_chat_model_dir, data_dir, tmp_path):
    out = tmp_path / "lora"
    config = recipe_config(tmp_path, data_dir, preset="tiny_lora", max_steps=20, eval_steps=20, save_steps=20)
    before = parameter_elements()
    trainer = recipes.dpo.main(dpo_args(config, tiny_chat_model_dir, out))
    adapter = sum(p.numel() for n, p in trainer.model.named_parameters() if "lora_" in n)
    assert adapter > 0 and parameter_elements() - before == model_elements(tiny_chat_model_dir) + adapter  # no copy
    assert trainer.ref_model is None

    base = trainer.model.get_base_model()
    start = load_file(tiny_chat_model_dir / "model.safetensors")
    frozen = {k.replace(".base_layer", ""): v for k, v in base.state_dict().items() if "lora_" not in k}
    assert all(torch.equal(frozen[k], start[k]) for k in start)  # the reference (adapter disabled) is unchanged
    held = json.loads((out / "dpo_metrics.json").read_text())["held_out"]
    assert held["logp_margin_gain"] != 0 and (out / "adapter_model.safetensors").exists()

    merged = tmp_path / "merged"
    recipes.merge_lora.main(["--adapter_dir", str(out), "--output_dir", str(merged)])
    x = torch.randint(0, base.config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = trainer.model.eval()(x).logits
        got = AutoModelForCausalLM.from_pretrained(merged).eval()(x).logits
    assert (got - want).abs().max() < 1e-4


def test_precomputed_reference_log_probs_keep_no_reference_model(tiny_chat_model_dir, data_dir, tmp_path):
    out = tmp_path / "pre"
    config = recipe_config(tmp_path, data_dir, sources=((ZH, 60),), max_steps=10, eval_steps=10, save_steps=10,
                           precompute_ref_log_probs=True)
    trainer = recipes.dpo.main(dpo_args(config, tiny_chat_model_dir, out))
    assert trainer.ref_model is None
    assert "ref_chosen_logps" in trainer.train_dataset.column_names
    held = json.loads((out / "dpo_metrics.json").read_text())["held_out"]
    assert held["pairs"] > 0 and held["logp_margin_gain"] != 0


# --- bad input --------------------------------------------------------------------------------------------------------


def test_pairs_with_empty_or_equal_answers_stop_the_run_naming_file_and_record(tiny_chat_model_dir, data_dir,
                                                                               tmp_path, capsys):
    pairs = json.loads((data_dir / ZH).read_text())[:50]
    pairs[3]["chosen"]["value"] = "  "
    pairs[7]["rejected"] = pairs[7]["chosen"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(pairs, ensure_ascii=False))
    config = recipe_config(tmp_path, data_dir, sources=())
    err = run_recipe_error("dpo", dpo_args(config, tiny_chat_model_dir, tmp_path / "o", "--datasets", str(bad)),
                           capsys)
    assert "bad.json: 2 of 50 records invalid" in err
    assert "record 3: empty 'chosen' answer" in err and "record 7: chosen and rejected are the same answer" in err


def test_a_base_model_warns_and_an_adapter_is_refused(tiny_chat_model_dir, data_dir, tmp_path, caplog, capsys):
    base = tmp_path / "base"  # a copy: the shared fixture stays as every other test expects it
    shutil.copytree(tiny_chat_model_dir, base)
    (base / "run_info.json").write_text(json.dumps({"recipe": "pretrain"}))
    recipes.dpo.warn_if_not_instruction_tuned(str(base))
    assert "is a base model (written by pretrain), not an SFT model" in caplog.text
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    err = run_recipe_error("dpo", dpo_args(recipe_config(tmp_path, data_dir), adapter, tmp_path / "o"), capsys)
    assert "is a LoRA adapter: merge it first" in err


@pytest.mark.parametrize("config", sorted(p.name for p in (REPO_ROOT / "configs/dpo").glob("*.yaml")))
def test_every_dpo_recipe_parses_and_loads_its_pairs(config, data_dir):
    from llm_recipes.chat_data import PREFERENCE, load_mixture

    parser = recipes.dpo.make_parser()
    path = REPO_ROOT / "configs/dpo" / config
    byo = yaml.safe_load(path.read_text())["model_name_or_path"] is None  # a model you bring: named on the CLI
    script_args, args, model_args = parser.parse(["--config", str(path),
                                                  *(["--model_name_or_path", "org/any-model"] if byo else [])])
    recipes.dpo.check_combination(script_args, args, model_args)
    data, reports = load_mixture(script_args, seed=args.seed, task=PREFERENCE)
    assert len(data["train"]) > 400 and len(data["test"]) > 20 and all(r.invalid == 0 for r in reports)
    assert args.eval_strategy == "steps" and args.max_length > script_args.max_prompt_length


# --- ZeRO-3 on 2 processes, kill and resume ---------------------------------------------------------------------------


def run_dpo(config, model_dir, out, *extra, processes=1, port=29671):
    return start_recipe("dpo", dpo_args(config, model_dir, out, *extra), processes, port)


@pytest.mark.slow
@TWO_PROCESSES
def test_zero3_two_processes_full_dpo_partitions_both_models_and_saves(tiny_chat_model_dir, data_dir, tmp_path):
    out = tmp_path / "z3"
    # 9 held-out pairs after prompt fitting (seeded): an odd count, which 2 ranks cannot split evenly, so scoring that
    # counted the padding would show here (with `gather` for `gather_for_metrics` it reports 16)
    config = recipe_config(tmp_path, data_dir, max_steps=6, eval_steps=6, save_steps=6, logging_steps=2,
                           test_split_size=9)
    output, _ = (proc := run_dpo(config, tiny_chat_model_dir, out, processes=2)).communicate(timeout=900)
    assert proc.returncode == 0, output[-3000:]
    for rank in (0, 1):
        for what in ("ZeRO-3 partition", "reference ZeRO-3 partition"):
            line = next(l for l in output.splitlines() if f"[rank {rank}] {what}:" in l)
            counts = line.split("holds ")[1].split(" parameter")[0].split(" of ")
            held, total = (int(x.replace(",", "")) for x in counts)
            assert abs(held / total - 0.5) < 0.01, line
    saved, start = load_file(out / "model.safetensors"), load_file(tiny_chat_model_dir / "model.safetensors")
    assert saved.keys() == start.keys() and all(t.numel() > 0 for t in saved.values())
    assert any(not torch.equal(saved[k], start[k]) for k in start)
    metrics = json.loads((out / "dpo_metrics.json").read_text())
    assert metrics["data"]["test"] % 2 == 1, metrics["data"]["test"]  # else the check below could not fail
    assert metrics["held_out"]["pairs"] == metrics["data"]["test"]  # every held-out pair scored once over 2 ranks


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["tiny", "tiny_lora"])
def test_kill_and_resume_continues_at_the_checkpoint(preset, tiny_chat_model_dir, data_dir, tmp_path, capsys, caplog):
    """SIGKILL after the second checkpoint, resume `latest`: same batches from there on, same losses and weights."""
    from llm_recipes.training import CHECKPOINT_COMPLETE

    config = recipe_config(tmp_path, data_dir, preset=preset, eval_strategy="no", eval_on_start=False,
                           max_steps=24, save_steps=8, save_total_limit=3, logging_steps=1, log_data_order=True)
    baseline, killed = tmp_path / "baseline", tmp_path / "killed"
    recipes.dpo.main(dpo_args(config, tiny_chat_model_dir, baseline))  # in this process: one interpreter start fewer
    kill_once_exists(run_dpo(config, tiny_chat_model_dir, killed), killed / "checkpoint-16" / CHECKPOINT_COMPLETE,
                     group=True)
    assert not (killed / "trainer_state.json").exists(), "the run finished before it was killed"
    checkpoint, before = newest_checkpoint_step(killed), len(data_order(killed))
    out = run_main("dpo", dpo_args(config, tiny_chat_model_dir, killed, "--resume_from_checkpoint", "latest"), capsys,
                   caplog)
    assert_resumed_at(out, 24, checkpoint)
    assert_resumed_batches(baseline, killed, before, checkpoint, 24, 0)
    assert_same_losses(baseline, killed, checkpoint)
    assert_same_update(baseline, killed, checkpoint,
                       "adapter_model.safetensors" if preset == "tiny_lora" else "model.safetensors")


# --- a model family brought by the user (Llama 3.1, Qwen 2.5, Llama 2) -------------------------------------------------


@pytest.mark.slow  # a 128k-152k vocabulary makes even 2 LoRA steps (policy and reference pass) cost seconds a family
@pytest.mark.parametrize("family", FAMILIES)
def test_byo_lora_dpo_on_a_family_keeps_its_template_and_shape_and_stops_at_its_end_of_turn(
        family, family_model_dir, tmp_path, data_dir, capsys, caplog):
    """configs/dpo/byo_lora.yaml as shipped but for the budget: pairs rendered through the family's own template,
    the adapter and its merge keep that template, stop at the family's end of turn and keep a tied model tied."""
    base = family_model_dir(family)
    pairs = tmp_path / "pairs.json"
    pairs.write_text(json.dumps([{"prompt": f"What is the capital of country {i}?", "chosen": "Paris.",
                                  "rejected": "London."} for i in range(8)]))
    config = recipe_config(tmp_path, data_dir, preset="byo_lora", sources=(), test_split_size=0, eval_strategy="no",
                           eval_on_start=False, max_steps=2, save_steps=2, max_length=128, max_prompt_length=64,
                           per_device_train_batch_size=2, gradient_accumulation_steps=1, dtype="float32", bf16=False,
                           activation_checkpointing=False)
    cfg = yaml.safe_load(config.read_text())
    cfg["datasets"] = [{"path": str(pairs), "format": "preference"}]
    config.write_text(yaml.safe_dump(cfg))
    out, merged = tmp_path / "dpo-lora", tmp_path / "merged"
    run_main("dpo", dpo_args(config, base, out), capsys, caplog)
    recipes.merge_lora.main(["--adapter_dir", str(out), "--output_dir", str(merged)])
    original = AutoTokenizer.from_pretrained(base).chat_template
    for folder in (out, merged):
        assert AutoTokenizer.from_pretrained(folder).chat_template == original, folder
    model = AutoModelForCausalLM.from_pretrained(merged)
    stops = model.generation_config.eos_token_id
    tokenizer = AutoTokenizer.from_pretrained(merged)
    assert tokenizer.convert_ids_to_tokens(stops if isinstance(stops, list) else [stops]) == FAMILY_EXPECTED[family][0]
    assert model.config.tie_word_embeddings == AutoModelForCausalLM.from_pretrained(base).config.tie_word_embeddings
    assert (out / "adapter_model.safetensors").stat().st_size < 1_000_000
