import datasets
import pytest
import torch
from transformers import AutoTokenizer

from llm_recipes.preference import fit_prompt, fit_prompts, held_out_scores


@pytest.fixture(scope="module")
def tokenizer(tiny_tokenizer_dir):
    return AutoTokenizer.from_pretrained(tiny_tokenizer_dir)


def length(tokenizer, prompt):
    return len(tokenizer.apply_chat_template(prompt, add_generation_prompt=True, return_dict=False))


SYSTEM = {"role": "system", "content": "You are a careful assistant."}
OLD = [{"role": "user", "content": "Tell me a long story about the sea. " * 8},
       {"role": "assistant", "content": "Once upon a time the sea was wide. " * 8}]
LAST = {"role": "user", "content": "Now make it short."}


def test_long_multi_turn_prompts_lose_their_oldest_exchange_and_keep_the_system_turn(tokenizer):
    prompt = [SYSTEM, *OLD, LAST]
    budget = length(tokenizer, [SYSTEM, LAST])
    assert length(tokenizer, prompt) > budget
    assert fit_prompt(tokenizer, prompt, budget) == ([SYSTEM, LAST], "prompt_trimmed")
    assert fit_prompt(tokenizer, prompt, length(tokenizer, prompt)) == (prompt, "kept")
    assert fit_prompt(tokenizer, [SYSTEM, LAST], budget - 1) == ([SYSTEM, LAST], "prompt_too_long")


def test_fit_prompts_counts_per_source_and_drops_only_the_too_long(tokenizer):
    rows = [{"prompt": [SYSTEM, *OLD, LAST], "source": "a"}, {"prompt": [LAST], "source": "a"},
            {"prompt": [OLD[0]], "source": "b"}]
    kept, counts = fit_prompts(datasets.Dataset.from_list(rows), tokenizer, length(tokenizer, [SYSTEM, LAST]), "train")
    assert counts == {"a": {"prompt_trimmed": 1, "kept": 1}, "b": {"prompt_too_long": 1}}
    assert kept["prompt"] == [[SYSTEM, LAST], [LAST]] and "fit" not in kept.column_names


def test_held_out_scores_compare_the_policy_with_the_reference():
    logps = {"ref_chosen": torch.tensor([-10.0, -10.0]), "ref_rejected": torch.tensor([-9.0, -12.0]),
             "policy_chosen": torch.tensor([-9.0, -11.0]), "policy_rejected": torch.tensor([-10.0, -12.0])}
    s = held_out_scores(logps, beta=0.5)
    assert s["sft_logp_margin"] == pytest.approx(0.5) and s["dpo_logp_margin"] == pytest.approx(1.0)
    assert s["logp_margin_gain"] == pytest.approx(0.5)  # pair 0 gained 2, pair 1 lost 1
    assert s["reward_accuracy"] == 0.5 and s["sft_prefers_chosen"] == 0.5 and s["dpo_prefers_chosen"] == 1.0
    assert s["rewards_chosen"] == pytest.approx(0.0) and s["reward_margin"] == pytest.approx(0.25)
