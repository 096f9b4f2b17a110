"""One greedy answer through the chat template at the end of a training run (SFT's `sample_prompt`): what the model
now says, and whether it stopped at one of its stop tokens."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from llm_recipes.atomic import atomic_write_text


@torch.no_grad()
def sample_generation(model, tokenizer, prompt: str, max_new_tokens: int) -> dict:
    """Greedy answer to one user prompt, rendered and decoded through the chat template."""
    model.eval()
    inputs = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                           return_dict=True, return_tensors="pt").to(model.device)
    out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    new = out[0, inputs["input_ids"].shape[1]:].tolist()
    stops = model.generation_config.eos_token_id
    stops = stops if isinstance(stops, list) else [stops]
    return {
        "prompt": prompt,
        "rendered_prompt": tokenizer.decode(inputs["input_ids"][0]),
        "completion": tokenizer.decode(new, skip_special_tokens=False),
        "new_tokens": len(new),
        "stopped_at": tokenizer.convert_ids_to_tokens(new[-1]) if new and new[-1] in stops else None,
    }


def write_sample(model, tokenizer, prompt: str, max_new_tokens: int, output_dir: str) -> dict:
    """sample_generation into output_dir/sample_generation.json, and on the console."""
    sample = sample_generation(model, tokenizer, prompt, max_new_tokens)
    atomic_write_text(Path(output_dir) / "sample_generation.json",
                      json.dumps(sample, indent=2, ensure_ascii=False) + "\n")
    print(f"--- sample generation ({sample['new_tokens']} tokens, stopped at {sample['stopped_at']}) ---\n"
          f"{sample['rendered_prompt']}{sample['completion']}", flush=True)
    return sample
