"""Preference pairs for DPO, around TRL's DPOTrainer: prompts fitted to a token budget (counted), the truncation
TRL's collator will apply (counted), and the held-out measurement that says whether DPO did what it is for.

TRL tokenizes a pair as prompt + chosen and prompt + rejected through the chat template and cuts both at
`max_length` from the end (`keep_start`); it has no prompt budget of its own. `fit_prompts` gives one: a prompt over
`max_prompt_length` tokens loses its oldest turns (system turns stay) until it fits, and a pair whose last user turn
alone is too long is dropped. Both are counted per source, as the collator's answer truncation is.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import asdict
from typing import Any

import datasets
import torch

from llm_recipes.chat_data import prompt_tokens

FIT_OUTCOMES = ("kept", "prompt_trimmed", "prompt_too_long")


def fit_prompt(tokenizer, prompt: list[dict], max_prompt_length: int) -> tuple[list[dict], str]:
    """The prompt with its oldest exchanges dropped until it fits (system turns kept), and what happened."""
    if prompt_tokens(tokenizer, prompt) <= max_prompt_length:
        return prompt, "kept"
    system = [m for m in prompt if m["role"] == "system"]
    turns = [m for m in prompt if m["role"] != "system"]
    while True:
        users = [i for i, m in enumerate(turns) if m["role"] == "user"]
        if len(users) < 2:
            return prompt, "prompt_too_long"
        turns = turns[users[1]:]  # the next exchange starts at the second user turn
        if prompt_tokens(tokenizer, system + turns) <= max_prompt_length:
            return system + turns, "prompt_trimmed"


def fit_prompts(ds: datasets.Dataset, tokenizer, max_prompt_length: int,
                split: str) -> tuple[datasets.Dataset, dict[str, Counter]]:
    """Fit every prompt to `max_prompt_length` tokens; returns the pairs kept and, per source, how many were kept as
    they were, trimmed, or dropped as too long."""

    def fit(batch):
        prompts, outcomes = [], []
        for prompt in batch["prompt"]:
            fitted, outcome = fit_prompt(tokenizer, prompt, max_prompt_length)
            prompts.append(fitted)
            outcomes.append(outcome)
        return {"prompt": prompts, "fit": outcomes}

    fitted = ds.map(fit, batched=True, desc=f"fitting {split} prompts to {max_prompt_length} tokens")
    counts: dict[str, Counter] = defaultdict(Counter)
    for source, outcome in zip(fitted["source"], fitted["fit"]):
        counts[source][outcome] += 1
    kept = fitted.filter(lambda o: o != "prompt_too_long", input_columns="fit").remove_columns("fit")
    return kept, counts


def pair_length(prompt_ids: list[int], chosen_ids: list[int], rejected_ids: list[int]) -> int:
    """A tokenized pair's length as TRL's collator sees it: the prompt plus the longer answer."""
    return len(prompt_ids) + max(len(chosen_ids), len(rejected_ids))


def truncation_counts(tokenized: datasets.Dataset, max_length: int | None) -> dict[str, Counter]:
    """Per source: pairs whose chosen or rejected answer TRL's collator cuts at `max_length` (prompt_ids etc. are the
    columns DPOTrainer adds), and the pairs in all."""
    counts: dict[str, Counter] = defaultdict(Counter)
    columns = tokenized.select_columns(["source", "prompt_ids", "chosen_ids", "rejected_ids"])
    for row in columns:
        longest = pair_length(row["prompt_ids"], row["chosen_ids"], row["rejected_ids"])
        counts[row["source"]]["pairs"] += 1
        counts[row["source"]]["answer_truncated"] += int(max_length is not None and longest > max_length)
    return counts


def drop_over_length(tokenized: datasets.Dataset, max_length: int) -> datasets.Dataset:
    """The pairs whose prompt + longer answer fit `max_length`: a cut answer loses its end-of-turn token, so the
    preferred answer would teach a small model answers that never stop."""
    return tokenized.filter(lambda p, c, r: pair_length(p, c, r) <= max_length,
                            input_columns=["prompt_ids", "chosen_ids", "rejected_ids"])


def apply_length_policy(trainer, max_length: int | None, drop: bool, counts: dict[str, Counter]) -> None:
    """Count, per source and split, the pairs TRL's collator will cut at max_length; with `drop`, take them out of
    the trainer's tokenized datasets instead (TRL's own token counts decide, as they decide truncation)."""
    drop = drop and max_length is not None
    for split, ds in (("train", trainer.train_dataset), ("test", trainer.eval_dataset)):
        for source, c in (truncation_counts(ds, max_length) if ds is not None else {}).items():
            over = c["answer_truncated"]
            counts[source].update(**({"answer_too_long": over, split: c["pairs"] - over} if drop else
                                     {"answer_truncated": over, split: c["pairs"]}))
    if drop:
        trainer.train_dataset = drop_over_length(trainer.train_dataset, max_length)
        if trainer.eval_dataset is not None:
            trainer.eval_dataset = drop_over_length(trainer.eval_dataset, max_length)


def data_report(reports, counts: dict[str, Counter], max_prompt_length: int) -> dict:
    """Per source: records, invalid, valid pairs, used (after max_samples / fraction) = prompt too long (dropped) +
    train + held out (+ answer too long, with long_pairs: drop); prompts trimmed; answers TRL truncates at max_length."""
    keys = ("prompt_trimmed", "prompt_too_long", "answer_truncated", "answer_too_long", "train", "test")
    sources = [{**asdict(r), **{k: counts[r.source][k] for k in keys}} for r in reports]
    return {"sources": sources, "max_prompt_length": max_prompt_length,
            **{k: sum(s[k] for s in sources)
               for k in ("records", "invalid", "prompt_too_long", "answer_too_long", "train", "test")}}


# --- held-out measurement ---------------------------------------------------------------------------------------------


def _completion_log_probs(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probabilities of the chosen and the rejected answers (TRL's fused LM head: no full logits)."""
    labels = batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels, use_cache=False,
                fused_lm_head=True)
    return out.log_probs[:, -(labels.size(1) - 1):].sum(dim=1).chunk(2)


@torch.no_grad()
def pair_log_probs(trainer, dataset: datasets.Dataset) -> dict[str, torch.Tensor]:
    """Per held-out pair, log p(chosen) and log p(rejected) under the trained policy and the reference (the SFT
    model: the frozen copy, the adapter-disabled base under LoRA, or the precomputed values). Every process takes
    part (ZeRO-3 gathers weights collectively); each pair is counted once."""
    model = trainer.model_wrapped if trainer.model_wrapped is not None else trainer.model
    model.eval()
    found = defaultdict(list)
    for batch in trainer.get_eval_dataloader(dataset):
        batch.pop("real_tokens", None), batch.pop("token_slots", None)
        batch = trainer._prepare_inputs(batch)
        if "ref_chosen_logps" in batch:
            ref = batch["ref_chosen_logps"], batch["ref_rejected_logps"]
        else:
            ref = trainer.compute_ref_log_probs(trainer.ref_model or model, batch)
        values = (*_completion_log_probs(model, batch), *ref)
        for key, value in zip(("policy_chosen", "policy_rejected", "ref_chosen", "ref_rejected"),
                              trainer.accelerator.gather_for_metrics(values)):
            found[key].append(value.float().cpu())
    return {k: torch.cat(v) for k, v in found.items()}


def _mean_ci(x: torch.Tensor) -> tuple[float, float]:
    """Mean and the half-width of its normal 95 % interval."""
    n = x.numel()
    return x.mean().item(), (1.96 * x.std().item() / math.sqrt(n)) if n > 1 else float("nan")


def held_out_scores(logps: dict[str, torch.Tensor], beta: float) -> dict[str, Any]:
    """What DPO is for, on pairs it never trained on: does the policy separate chosen from rejected more than the
    SFT model did? Rewards are TRL's: beta * (log p_policy - log p_ref) of each answer."""
    ref_margin = logps["ref_chosen"] - logps["ref_rejected"]
    policy_margin = logps["policy_chosen"] - logps["policy_rejected"]
    chosen_reward = beta * (logps["policy_chosen"] - logps["ref_chosen"])
    rejected_reward = beta * (logps["policy_rejected"] - logps["ref_rejected"])
    gain, gain_ci = _mean_ci(policy_margin - ref_margin)
    return {
        "pairs": ref_margin.numel(),
        "reward_accuracy": (chosen_reward > rejected_reward).float().mean().item(),
        "reward_margin": (chosen_reward - rejected_reward).mean().item(),
        "rewards_chosen": chosen_reward.mean().item(),
        "rewards_rejected": rejected_reward.mean().item(),
        "sft_logp_margin": ref_margin.mean().item(),
        "dpo_logp_margin": policy_margin.mean().item(),
        "logp_margin_gain": gain,
        "logp_margin_gain_ci95": gain_ci,
        "sft_prefers_chosen": (ref_margin > 0).float().mean().item(),
        "dpo_prefers_chosen": (policy_margin > 0).float().mean().item(),
    }


def report_markdown(scores: dict[str, Any] | None, data: dict[str, Any], args, log_history: list[dict]) -> str:
    """dpo_report.md: the data counts, the training curve, and the held-out comparison with the SFT model."""
    lines = ["# DPO report", "", f"Loss {', '.join(args.loss_type)}, beta {args.beta}, max_length {args.max_length}, "
             f"max_prompt_length {data['max_prompt_length']}, {data['train']} train / {data['test']} held-out pairs.",
             "", "## Data", "",
             "| source | records | invalid | prompt trimmed | prompt too long (dropped) | answer truncated | "
             "answer too long (dropped) | train | held out |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in data["sources"]:
        lines.append(f"| {s['source']} | {s['records']} | {s['invalid']} | {s['prompt_trimmed']} | "
                     f"{s['prompt_too_long']} | {s['answer_truncated']} | {s['answer_too_long']} | {s['train']} | "
                     f"{s['test']} |")
    train = [e for e in log_history if "loss" in e and "rewards/accuracies" in e]
    if train:
        first, last = train[0], train[-1]
        speed = sorted(e["tokens_per_second"] for e in train if "tokens_per_second" in e)
        lines += ["", "## Training", "", "| step | loss | reward accuracy (train) | reward margin |",
                  "|---:|---:|---:|---:|"]
        lines += [f"| {e['step']} | {e['loss']:.4f} | {e['rewards/accuracies']:.3f} | {e['rewards/margins']:.4f} |"
                  for e in (first, last)]
        if speed:
            share = [e["real_token_share"] for e in train if "real_token_share" in e]
            fill = f"; real tokens fill {sum(share) / len(share):.1%} of the padded batch slots" if share else ""
            lines += ["", f"Median {speed[len(speed) // 2]:,.0f} tokens/s{fill}."]
    evals = [e for e in log_history if "eval_rewards/accuracies" in e]
    if evals:
        lines += ["", "## Held-out curve (TRL's eval, mean over batches)", "",
                  "| step | eval loss | reward accuracy | reward margin |", "|---:|---:|---:|---:|"]
        lines += [f"| {e['step']} | {e['eval_loss']:.4f} | {e['eval_rewards/accuracies']:.3f} | "
                  f"{e['eval_rewards/margins']:.4f} |" for e in evals]
    if scores:
        s = scores
        lines += ["", f"## Held-out pairs: SFT model vs DPO policy ({s['pairs']} pairs, each scored once)", "",
                  "| | SFT (reference) | DPO policy |", "|---|---:|---:|",
                  f"| mean log p(chosen) - log p(rejected) | {s['sft_logp_margin']:.3f} | {s['dpo_logp_margin']:.3f} |",
                  f"| share of pairs where chosen is more likely | {s['sft_prefers_chosen']:.3f} | "
                  f"{s['dpo_prefers_chosen']:.3f} |", "",
                  f"- Log-likelihood margin gain over SFT: {s['logp_margin_gain']:+.3f} "
                  f"(95 % interval ± {s['logp_margin_gain_ci95']:.3f}).",
                  f"- Reward accuracy {s['reward_accuracy']:.3f} (share of pairs where the chosen answer gained more "
                  f"than the rejected one); reward margin {s['reward_margin']:.4f}; rewards chosen "
                  f"{s['rewards_chosen']:.4f}, rejected {s['rewards_rejected']:.4f}."]
    return "\n".join(lines) + "\n"
