"""The training core's logging: real tokens (from the collator's counts) summed into the saved state, real-token share,
tokens/s, MFU against a stated peak, perplexity; and the argument fix-ups."""

import math

import datasets
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments

from llm_recipes.model import training_flops_per_token
from llm_recipes.training import RecipeTrainerMixin, parameter_counts, prepare_training_args, setup_trainer

ROWS, LENGTH, REAL = 16, 32, 24  # every row: 24 real tokens padded to 32 slots


class CoreTrainer(RecipeTrainerMixin, Trainer):
    pass


def collate(rows):
    ids = torch.tensor([r["input_ids"] for r in rows])
    labels = ids.clone()
    labels[:, REAL:] = -100
    return {"input_ids": ids, "labels": labels, "real_tokens": REAL * len(rows), "token_slots": LENGTH * len(rows)}


def tiny_model():
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                        num_attention_heads=2, num_key_value_heads=2, head_dim=32,
                                        max_position_embeddings=LENGTH))


def test_logs_real_tokens_share_mfu_and_perplexity(tmp_path):
    ids = torch.randint(128, (ROWS, LENGTH), generator=torch.Generator().manual_seed(0))
    data = datasets.Dataset.from_dict({"input_ids": ids.tolist()})
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=4, logging_steps=2,
                             eval_strategy="steps", eval_steps=4, save_strategy="no", report_to="none",
                             remove_unused_columns=False)
    trainer = CoreTrainer(model=tiny_model(), args=args, train_dataset=data, eval_dataset=data, data_collator=collate)
    setup_trainer(trainer, seq_len=LENGTH, peak_tflops=1e-6)  # a tiny "peak" so the MFU is a visible number
    trainer.train()

    total, trainable = parameter_counts(trainer.model)
    assert trainer.flops_per_token == training_flops_per_token(trainer.model.config, total, LENGTH)
    assert total == trainable == sum(p.numel() for p in trainer.model.parameters())
    logs = [e for e in trainer.state.log_history if "tokens_per_second" in e]
    assert [e["tokens_seen"] for e in logs] == [2 * 4 * REAL, 4 * 4 * REAL]  # real tokens, not slots
    assert trainer.state.num_input_tokens_seen == 4 * 4 * REAL  # saved in trainer_state.json with every checkpoint
    for e in logs:
        assert e["real_token_share"] == REAL / LENGTH
        expected_mfu = trainer.flops_per_token * e["tokens_per_second"] / (1e-6 * 1e12)
        assert math.isclose(e["mfu"], expected_mfu, rel_tol=1e-3, abs_tol=1e-4)
    evals = [e for e in trainer.state.log_history if "eval_loss" in e]
    assert evals and math.isclose(evals[0]["eval_perplexity"], math.exp(evals[0]["eval_loss"]), rel_tol=1e-4)


def test_argument_fix_ups_without_a_gpu(monkeypatch, caplog):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    args = TrainingArguments(output_dir="unused", report_to="none")
    args.bf16, args.fp16, args.eval_on_start, args.eval_strategy = True, True, True, "no"
    args.hub_token = "hf_" + "x" * 34
    prepare_training_args(args)
    assert args.bf16 is False and args.fp16 is False and args.eval_on_start is False and args.hub_token is None
    assert "bf16 requested but no GPU" in caplog.text and "fp16 requested but no GPU" in caplog.text
    assert "eval_on_start ignored" in caplog.text


def test_deepspeed_on_a_cpu_skips_its_inference_only_shm_op_in_one_process_or_many(monkeypatch):
    """DeepSpeed's shared-memory all-reduce (a ~58 core-s C++ compile on a fresh install) is marked incompatible for
    any DeepSpeed run on a CPU, one process or several (the GPU benchmark's CPU smoke runs ZeRO-3 in one), and left
    alone without DeepSpeed."""
    from types import SimpleNamespace

    import deepspeed.ops

    from llm_recipes.distributed import skip_deepspeed_shm_comm

    ops = deepspeed.ops.__compatible_ops__
    monkeypatch.setitem(ops, "deepspeed_shm_comm", True)
    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED", raising=False)
    skip_deepspeed_shm_comm(SimpleNamespace(deepspeed=None))
    assert ops["deepspeed_shm_comm"] is True
    for world_size in ("1", "2"):
        monkeypatch.setitem(ops, "deepspeed_shm_comm", True)
        monkeypatch.setenv("WORLD_SIZE", world_size)
        monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
        skip_deepspeed_shm_comm(SimpleNamespace(deepspeed=None))
        assert ops["deepspeed_shm_comm"] is False, world_size
