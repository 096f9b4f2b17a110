import json
import math
import os
import re
import signal
import subprocess
import sys

import datasets
import pytest
import torch
from transformers import AutoTokenizer, LlamaForCausalLM, Trainer

import recipes.export
import recipes.merge_lora
import recipes.pack
import recipes.pretrain
from testkit import (ACCELERATE, FAMILIES, PLANTED_ENV, REPO_ROOT, TWO_PROCESSES, assert_resumed_at,
                     assert_resumed_batches, assert_same_losses, assert_same_losses_and_weights, built_once, data_order,
                     history, kill_during_evaluation, kill_once_exists, kill_when, losses, newest_checkpoint_step, pretrain_args, run_main,
                     run_recipe_error, secret_leaks)
import warmproc
from llm_recipes.checkpoints import resolve_source
from llm_recipes.model import ModelArguments, build_llama_config
from llm_recipes.training import CHECKPOINT_COMPLETE, complete_checkpoints

def test_single_process_loss_and_perplexity_drop(tiny_packed_dir, tmp_path):
    out = tmp_path / "run"
    recipes.pretrain.main(pretrain_args(
        tiny_packed_dir, out, "--max_steps", "60", "--logging_steps", "1", "--eval_steps", "60", "--eval_on_start", "true",
        "--save_steps", "60",
    ))
    log = json.loads((out / "checkpoint-60" / "trainer_state.json").read_text())["log_history"]
    train = losses(log)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert abs(train[1] - math.log(len(tokenizer))) < 0.5  # starts at chance level, ln(vocab)
    assert train[60] < train[1] - 1.5
    evals = [e["eval_perplexity"] for e in log if "eval_perplexity" in e]
    assert len(evals) == 2 and evals[1] < evals[0] / 3
    first = next(e for e in log if "tokens_per_second" in e)
    assert first["tokens_seen"] == first["step"] * 8 * 64

    model = LlamaForCausalLM.from_pretrained(out)
    assert model.config.vocab_size == len(tokenizer) and model.config.use_cache is True
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    for name in ("resolved_config.yaml", "run_info.json", "model.safetensors", "tokenizer.json"):
        assert (out / name).exists()
    assert (out / "checkpoint-60" / CHECKPOINT_COMPLETE).exists()
    assert list((out / "runs").rglob("events.out.tfevents*")) == []  # report_to none: no TensorBoard files


def test_no_weight_decay_on_norms_and_biases(tmp_path):
    recipe = recipes.pretrain
    args = recipe.PretrainConfig(output_dir=str(tmp_path), weight_decay=0.1, report_to="none")
    model = LlamaForCausalLM(build_llama_config(ModelArguments(model_preset="tiny")))
    optimizer = Trainer(model=model, args=args).create_optimizer()
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay = {names[id(p)] for g in optimizer.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    decay = {names[id(p)] for g in optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert no_decay == {n for n in names.values() if "norm" in n}
    assert all(n.endswith(".weight") and "norm" not in n for n in decay) and len(decay) > 0


def test_dry_run_plans_without_training(tiny_packed_dir, tmp_path, capsys):
    out = tmp_path / "dry"
    recipes.pretrain.main(pretrain_args(tiny_packed_dir, out, "--max_tokens", "100000", "--dry_run", "true"))
    printed = capsys.readouterr().out
    assert "parameters:" in printed and "train FLOPs/token" in printed and "GiB/GPU" in printed
    assert "196 steps x 512 tokens" in printed  # ceil(100000 / (8 * 64))
    assert not out.exists()


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--max_position_embeddings", "32"], "exceeds the model's max_position_embeddings"),
        (["--dataset_path", "/nonexistent/packed"], "not a packed dataset"),
        (["--learning_rat", "1e-3"], "unknown key '--learning_rat'"),
    ],
)
def test_bad_input(tiny_packed_dir, tmp_path, capsys, extra, message):
    err = run_recipe_error("pretrain", pretrain_args(tiny_packed_dir, tmp_path / "bad", *extra), capsys)
    assert message in err


def test_a_damaged_shard_is_named_before_any_compute(tiny_sharded_dir, tmp_path, capsys):
    import shutil

    packed = tmp_path / "packed"
    shutil.copytree(tiny_sharded_dir, packed)
    shard = packed / "train" / "00001.bin"
    shard.write_bytes(shard.read_bytes()[:-10])  # cut off mid-block, as a copy interrupted
    err = run_recipe_error("pretrain", pretrain_args(packed, tmp_path / "bad"), capsys)
    assert "train/00001.bin: 12406 bytes, but index.json says 97 blocks" in err, err
    assert not (tmp_path / "bad").exists()


def test_vocab_mismatch_is_caught_at_start(tiny_packed_dir, tiny_tokenizer_dir, tmp_path, capsys):
    other = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    other.add_tokens(["<extra_token>"])
    other.save_pretrained(tmp_path / "other_tok")
    err = run_recipe_error(
        "pretrain", pretrain_args(tiny_packed_dir, tmp_path / "bad", "--tokenizer_name_or_path", str(tmp_path / "other_tok")),
        capsys,
    )
    assert "vocab mismatch" in err and "2048" in err and "2049" in err


def test_unknown_yaml_key_names_file(tiny_packed_dir, tmp_path, capsys):
    cfg = tmp_path / "p.yaml"
    cfg.write_text((REPO_ROOT / "configs/pretrain/tiny.yaml").read_text() + "warmup_ratioo: 0.1\n")
    err = run_recipe_error("pretrain", ["--config", str(cfg), "--dataset_path", str(tiny_packed_dir)], capsys)
    assert "warmup_ratioo" in err and str(cfg) in err


def run_pretrain(args, **kwargs):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return warmproc.popen([sys.executable, str(REPO_ROOT / "recipes/pretrain.py"), *args], cwd=REPO_ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


KILL_COMMON = ["--max_steps", "60", "--save_steps", "10", "--save_total_limit", "3", "--logging_steps", "1",
               "--eval_steps", "25", "--log_data_order", "true"]


@pytest.fixture(scope="module")
def uninterrupted(tiny_packed_dir):
    """The run the killed ones must reproduce, built once (testkit.built_once) for all five kill points."""
    def build(folder):
        proc = run_pretrain(pretrain_args(tiny_packed_dir, folder / "run", *KILL_COMMON))
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, out

    return built_once("pretrain-uninterrupted", build, inputs=["recipes/pretrain.py", "configs/pretrain/tiny.yaml"],
                      key=(str(tiny_packed_dir), KILL_COMMON)) / "run"


@pytest.mark.slow
@pytest.mark.parametrize("kill_point", ["after_checkpoint_20", "evaluating_at_25", "writing_checkpoint_30",
                                        "seeded_step_7", "seeded_step_42", "shards_seeded_step_3"])
def test_kill_and_resume_matches_uninterrupted_run(kill_point, tiny_packed_dir, uninterrupted, tmp_path, capsys,
                                                   caplog, request):
    """SIGKILL after a checkpoint completed, in the middle of an evaluation, while a checkpoint is being written (its
    folder exists, its marker does not), or in a step drawn with a seed; then resume `latest` from the newest
    complete checkpoint (or from scratch). `shards_`: the killed and resumed runs read the same blocks as uint16
    shards (memory-mapped), the uninterrupted run read Arrow: the same batches and losses from the first step on."""
    import random

    baseline = uninterrupted
    common = KILL_COMMON
    killed = tmp_path / "killed"
    packed = request.getfixturevalue("tiny_sharded_dir") if kill_point.startswith("shards") else tiny_packed_dir
    proc = run_pretrain(pretrain_args(packed, killed, *common))
    if "seeded_step" in kill_point:  # in a step drawn with the seed (its batch was just drawn)
        step = random.Random(int(kill_point.rsplit("_", 1)[1])).randint(12, 58)  # seed 7: step 32, seed 42: step 52
        kill_when(proc, lambda: len(data_order(killed)) > step, timeout=300, what=f"step {step}")
    elif kill_point == "after_checkpoint_20":
        kill_once_exists(proc, killed / "checkpoint-20" / CHECKPOINT_COMPLETE, timeout=300)
    elif kill_point == "evaluating_at_25":
        kill_during_evaluation(proc, killed, 25, timeout=300)
        assert int(data_order(killed)[-1][0]) == 24, "the kill came after the evaluation: training went on"
    else:
        kill_once_exists(proc, killed / "checkpoint-30", timeout=300)
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "model.safetensors").exists(), "the run finished before it was killed"
    checkpoint, lines_before = newest_checkpoint_step(killed), len(data_order(killed))
    # a checkpoint cut off mid-write: newer than any other, but without its completion marker
    partial = killed / "checkpoint-55"
    partial.mkdir(parents=True, exist_ok=True)
    (partial / "model.safetensors").write_bytes(b"\0" * 100)

    out = run_main("pretrain", pretrain_args(packed, killed, *common, "--resume_from_checkpoint", "latest"),
                   capsys, caplog)
    assert "ignoring incomplete checkpoint(s)" in out and "checkpoint-55" in out
    if packed != tiny_packed_dir:  # the other format: the killed run drew the Arrow run's batches, with its losses
        assert data_order(killed)[:lines_before] == data_order(baseline)[:lines_before] and lines_before > 12
        assert_same_losses(baseline, killed, 0)

    # the resumed process starts at the checkpoint's step: its first logged step and its first batch prove it
    assert_resumed_at(out, 60, checkpoint)
    assert_resumed_batches(baseline, killed, lines_before, checkpoint, 60)
    assert_same_losses_and_weights(baseline, killed, checkpoint)


@pytest.mark.slow
@TWO_PROCESSES
def test_zero3_two_processes_partition_shard_and_save(tiny_packed_dir, tmp_path):
    out = tmp_path / "z3"
    cmd = [*ACCELERATE, "--config_file", str(REPO_ROOT / "launch/accelerate/zero3.yaml"), "--num_processes", "2",
           "--main_process_port", "29631", str(REPO_ROOT / "recipes/pretrain.py"),
           *pretrain_args(tiny_packed_dir, out, "--max_steps", "6", "--save_steps", "6", "--logging_steps", "2",
                          "--eval_steps", "6", "--log_data_order", "true")]
    proc = warmproc.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    output = proc.stdout + proc.stderr
    assert "shm_comm" not in output  # DeepSpeed's inference-only all-reduce: neither compiled nor loaded

    # 1. the ranks really partition the parameters: each holds half
    for rank in (0, 1):
        line = next(l for l in output.splitlines() if f"[rank {rank}] ZeRO-3 partition" in l)
        held, total = (int(x.replace(",", "")) for x in line.split("holds ")[1].split(" parameter")[0].split(" of "))
        assert abs(held / total - 0.5) < 0.01, line

    # 2. they see different data, one batch per step each
    ranks = [(out / "data_order" / f"rank{r}.txt").read_text().split("\n") for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 7  # 6 steps + trailing newline
    assert all(a != b for a, b in zip(ranks[0][:-1], ranks[1][:-1]))

    # 3. the consolidated save equals an independent gather of the trained weights (DeepSpeed's zero_to_fp32 on the
    #    last checkpoint's fp32 shards), checked in a plain process; with secrets in its environment, it writes none
    done = warmproc.run([sys.executable, "recipes/consolidate.py", "--checkpoint_dir", str(out / "checkpoint-6"),
                         "--output_dir", str(tmp_path / "gathered"), "--dtype", "float32"], cwd=REPO_ROOT,
                        env={**os.environ, **PLANTED_ENV}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert secret_leaks(tmp_path / "gathered", done.stdout + done.stderr) == []
    saved = LlamaForCausalLM.from_pretrained(out)
    gathered = LlamaForCausalLM.from_pretrained(tmp_path / "gathered")
    x = torch.randint(0, saved.config.vocab_size, (2, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(saved(x).logits, gathered(x).logits, atol=1e-6)
    trained_away = LlamaForCausalLM(saved.config)  # a fresh init differs: the comparison is not vacuous
    with torch.no_grad():
        assert not torch.allclose(saved(x).logits, trained_away(x).logits, atol=1e-3)

    # 4. make export takes the ZeRO checkpoint itself and gathers its fp32 shards the same way
    assert resolve_source(str(out / "checkpoint-6")).kind == "zero"
    exported = recipes.export.main(["--model_name_or_path", str(out / "checkpoint-6"),
                                    "--output_dir", str(tmp_path / "export"), "--repo_id", "tester/z3",
                                    "--dtype", "float32"])
    with torch.no_grad():
        assert torch.allclose(LlamaForCausalLM.from_pretrained(exported)(x).logits, gathered(x).logits, atol=1e-6)


@pytest.mark.slow
def test_resume_skips_damaged_checkpoints_naming_the_file(tiny_packed_dir, tmp_path, capsys, caplog):
    """A complete-looking checkpoint with a damaged model shard, a damaged optimizer file or no trainer_state.json
    is skipped with a warning naming the file; training resumes from the newest checkpoint that is intact."""
    out = tmp_path / "run"
    common = ["--save_steps", "5", "--save_total_limit", "4", "--logging_steps", "1", "--eval_strategy", "no"]
    recipes.pretrain.main(pretrain_args(tiny_packed_dir, out, "--max_steps", "20", *common))
    assert sorted(p.name for p in complete_checkpoints(out)) == [f"checkpoint-{s}" for s in (10, 15, 20, 5)]

    header = out / "checkpoint-20" / "model.safetensors"  # same size, garbage header
    header.write_bytes(b"\xff" * 16 + header.read_bytes()[16:])
    optimizer = out / "checkpoint-15" / "optimizer.pt"  # same size, flipped bytes in the middle
    data = bytearray(optimizer.read_bytes())
    data[len(data) // 2:len(data) // 2 + 64] = bytes(64)
    optimizer.write_bytes(bytes(data))
    (out / "checkpoint-10" / "trainer_state.json").unlink()

    log = run_main("pretrain", pretrain_args(tiny_packed_dir, out, "--max_steps", "25", *common,
                                             "--resume_from_checkpoint", "latest"), capsys, caplog)
    for name, file in (("checkpoint-20", "model.safetensors"), ("checkpoint-15", "optimizer.pt"),
                       ("checkpoint-10", "trainer_state.json")):
        assert re.search(rf"ignoring damaged checkpoint {name}: {re.escape(file)} ", log), (name, log[-2000:])
    logged = [int(m) for m in re.findall(r"^step (\d+)/25 \| loss", log, re.M)]
    assert logged[0] == 6  # resumed from checkpoint-5, the newest intact one


@pytest.mark.slow
@TWO_PROCESSES
def test_zero3_two_processes_kill_and_resume(tiny_packed_dir, tmp_path):
    """The same guarantee on 2 processes under ZeRO-3: SIGKILL to the whole launch after a checkpoint, resume
    `latest`: each rank continues at the checkpoint's step with its own uninterrupted batches, same losses, same
    consolidated weights."""
    common = ["--max_steps", "20", "--save_steps", "5", "--save_total_limit", "4", "--logging_steps", "1",
              "--eval_strategy", "no", "--log_data_order", "true"]

    def launch(out, port, *extra):
        cmd = [*ACCELERATE, "--config_file", str(REPO_ROOT / "launch/accelerate/zero3.yaml"), "--num_processes", "2",
               "--main_process_port", str(port), str(REPO_ROOT / "recipes/pretrain.py"),
               *pretrain_args(tiny_packed_dir, out, *common, *extra)]
        return warmproc.popen(cmd, cwd=REPO_ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"}, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)

    baseline, killed = tmp_path / "baseline", tmp_path / "killed"
    out, _ = (proc := launch(baseline, 29641)).communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]

    kill_once_exists(launch(killed, 29642), killed / "checkpoint-10" / CHECKPOINT_COMPLETE, group=True)
    assert not (killed / "model.safetensors").exists(), "the run finished before it was killed"
    checkpoint = newest_checkpoint_step(killed)
    before = {rank: len(data_order(killed, rank)) for rank in (0, 1)}

    out, _ = (proc := launch(killed, 29643, "--resume_from_checkpoint", "latest")).communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    assert_resumed_at(out, 20, checkpoint)
    for rank in (0, 1):
        assert_resumed_batches(baseline, killed, before[rank], checkpoint, 20, rank)
    assert_same_losses_and_weights(baseline, killed, checkpoint)


# --- continued pretraining (model_name_or_path) -----------------------------------------------------------------------


def continue_args(packed_dir, model_dir, out, *extra):
    return ["--config", str(REPO_ROOT / "configs/pretrain/tiny_continue.yaml"), "--model_name_or_path",
            str(model_dir), "--dataset_path", str(packed_dir), "--output_dir", str(out), "--report_to", "none",
            "--per_device_train_batch_size", "8", "--warmup_steps", "2", "--max_steps", "4", "--eval_steps", "4",
            "--save_steps", "4", "--logging_steps", "1", *extra]


@pytest.fixture(scope="module")
def pretrained(tiny_packed_dir):
    """A short from-scratch run: the model to continue, with its final held-out loss in the log (built once)."""
    def build(folder):
        recipes.pretrain.main(pretrain_args(tiny_packed_dir, folder / "run", "--max_steps", "10", "--eval_steps", "10",
                                            "--save_steps", "10"))

    return built_once("pretrained", build, inputs=["recipes/pretrain.py", "configs/pretrain/tiny.yaml"],
                      key=str(tiny_packed_dir)) / "run"


def test_continued_pretraining_starts_at_the_saved_models_eval_loss(tiny_packed_dir, pretrained, tmp_path):
    out = tmp_path / "continued"
    recipes.pretrain.main(continue_args(tiny_packed_dir, pretrained, out))
    before = [e["eval_loss"] for e in history(pretrained) if "eval_loss" in e][-1]
    evals = [(e["step"], e["eval_loss"]) for e in history(out) if "eval_loss" in e]
    assert json.loads((out / "data_stats.json").read_text())["splits"]["train"]["tokens"] > 0
    assert evals[0][0] == 0 and abs(evals[0][1] - before) < 1e-5, (evals, before)
    first_lr = next(e["learning_rate"] for e in history(out) if "learning_rate" in e)
    assert first_lr < 1e-3 / 2  # the schedule is warmed up again, not resumed at its floor
    assert LlamaForCausalLM.from_pretrained(out).config.vocab_size == LlamaForCausalLM.from_pretrained(
        pretrained).config.vocab_size


def test_train_only_embeddings_freezes_the_body(tiny_packed_dir, pretrained, tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "embeddings"
    recipes.pretrain.main(continue_args(tiny_packed_dir, pretrained, out, "--train_only_embeddings", "true"))
    start, trained = load_file(pretrained / "model.safetensors"), load_file(out / "model.safetensors")
    changed = {k for k in start if not torch.equal(start[k], trained[k])}
    assert changed == {"model.embed_tokens.weight", "lm_head.weight"}, changed


def test_lora_continued_pretraining_trains_adapters_and_embeddings(tiny_packed_dir, pretrained, tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "lora"
    recipes.pretrain.main(continue_args(tiny_packed_dir, pretrained, out, "--peft_type", "lora"))
    saved = load_file(out / "adapter_model.safetensors")
    assert any("lora_A" in k for k in saved)
    assert any("embed_tokens" in k for k in saved) and any("lm_head" in k for k in saved)  # modules_to_save
    assert not (out / "model.safetensors").exists()
    recipes.merge_lora.main(["--adapter_dir", str(out), "--output_dir", str(tmp_path / "merged")])
    merged, start = load_file(tmp_path / "merged" / "model.safetensors"), load_file(pretrained / "model.safetensors")
    assert merged.keys() == start.keys()
    assert all(not torch.equal(merged[k], start[k]) for k in ("model.embed_tokens.weight", "lm_head.weight"))


def test_continued_pretraining_refuses_a_preset_and_a_smaller_vocab(tiny_packed_dir, pretrained, tmp_path, capsys):
    err = run_recipe_error("pretrain", continue_args(tiny_packed_dir, pretrained, tmp_path / "o", "--model_preset",
                                                     "tiny"), capsys)
    assert "model_name_or_path and model_preset both set" in err
    small = tmp_path / "small"
    model = LlamaForCausalLM.from_pretrained(pretrained)
    model.resize_token_embeddings(64)
    model.save_pretrained(small)
    err = run_recipe_error("pretrain", continue_args(tiny_packed_dir, small, tmp_path / "o"), capsys)
    assert f"vocab mismatch: model {small} has vocab_size 64" in err and not (tmp_path / "o").exists()


@pytest.mark.slow  # a 128k-152k vocabulary: pack, 2 steps, save; 3-10 s a family
@pytest.mark.parametrize("family", FAMILIES)
def test_continued_pretraining_of_a_family_learns_every_token_eos_included(family, family_model_dir, pack_config,
                                                                           tmp_path):
    """Llama 2 and 3 have no pad token and Qwen's pad is its eos: packed blocks need no padding, and every token, the
    eos that ends a document included, is a label (transformers' LM collator refused the first and masked the
    second). The family's own architecture is planned (Qwen 2's q/k/v biases)."""
    from llm_recipes.packing import BlockCollator

    base = family_model_dir(family)
    tokenizer = AutoTokenizer.from_pretrained(base)
    packed, out = tmp_path / "packed", tmp_path / "continued"
    recipes.pack.main(["--config", str(pack_config), "--tokenizer_name_or_path", str(base),
                       "--output_dir", str(packed), "--block_size", "64", "--max_documents", "200"])
    blocks = [{"input_ids": ids} for ids in datasets.load_from_disk(str(packed / "train"))[:4]["input_ids"]]
    batch = BlockCollator()(blocks)
    assert (batch["input_ids"] == tokenizer.eos_token_id).any() and torch.equal(batch["labels"], batch["input_ids"])
    recipes.pretrain.main(continue_args(packed, base, out, "--max_steps", "2", "--eval_steps", "2", "--save_steps",
                                        "2"))
    assert [e["step"] for e in history(out) if "eval_loss" in e] == [0, 2]


@pytest.mark.slow
@TWO_PROCESSES
def test_zero3_two_processes_continued_pretraining_partitions_and_saves(tiny_packed_dir, pretrained, tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "z3"
    cmd = [*ACCELERATE, "--config_file", str(REPO_ROOT / "launch/accelerate/zero3.yaml"), "--num_processes", "2",
           "--main_process_port", "29635", str(REPO_ROOT / "recipes/pretrain.py"),
           *continue_args(tiny_packed_dir, pretrained, out)]
    proc = warmproc.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    output = proc.stdout + proc.stderr
    for rank in (0, 1):
        line = next(l for l in output.splitlines() if f"[rank {rank}] ZeRO-3 partition" in l)
        counts = line.split("holds ")[1].split(" parameter")[0].split(" of ")
        held, total = (int(x.replace(",", "")) for x in counts)
        assert abs(held / total - 0.5) < 0.01, line
    before = [e["eval_loss"] for e in history(pretrained) if "eval_loss" in e][-1]
    first = next(e["eval_loss"] for e in history(out) if "eval_loss" in e)
    assert abs(first - before) < 1e-4  # the sharded load is the saved model
    start, trained = load_file(pretrained / "model.safetensors"), load_file(out / "model.safetensors")
    assert start.keys() == trained.keys() and any(not torch.equal(start[k], trained[k]) for k in start)


@pytest.mark.parametrize("document_masking", [True, False], ids=["masked", "plain"])
def test_document_masking_keeps_packed_documents_apart(document_masking, tiny_packed_dir, tmp_path):
    """The recipe's collator on a real packed block: with the switch, the second document's logits equal its logits
    run alone (1e-5); without it they differ (it sees the first document), so the test can fail."""
    import datasets

    model_args, data_args, args, _ = recipes.pretrain.make_parser().parse(pretrain_args(tiny_packed_dir, tmp_path))
    packed = datasets.load_from_disk(str(tiny_packed_dir))
    tokenizer = AutoTokenizer.from_pretrained(json.loads((tiny_packed_dir / "stats.json").read_text())
                                              ["tokenizer"]["name_or_path"])
    eos = tokenizer.eos_token_id
    block = next(b for b in packed["train"]["input_ids"] if eos in b[8:-16])  # a boundary well inside the block
    cut = block.index(eos, 8) + 1
    torch.manual_seed(0)
    config = build_llama_config(model_args, tokenizer=tokenizer, use_cache=False)
    model = LlamaForCausalLM._from_config(config, attn_implementation="sdpa").eval()
    trainer = recipes.pretrain.build_trainer(model, args, tokenizer, packed, len(block), document_masking)
    batch = trainer.data_collator([{"input_ids": block}])
    batch.pop("labels")
    with torch.no_grad():
        packed_logits = model(**batch).logits[0, cut:]
        alone = model(torch.tensor([block[cut:]])).logits[0]
    same = torch.allclose(packed_logits, alone, atol=1e-5)
    assert same == document_masking, (packed_logits - alone).abs().max()
