"""Talk to a chat model in the terminal: its own chat template and stop tokens, answers streamed token by token.

    python recipes/chat.py --config configs/chat/tiny.yaml --model_name_or_path outputs/tiny/export
    make chat MODEL=outputs/tiny/sft-lora            # a LoRA adapter: applied to the base named in its config

A thin loop over transformers' `TextIteratorStreamer` (generation in a thread, text printed as it comes), not
`transformers chat`: in transformers 5 that command is a client of a running `transformers serve` and cannot open a
folder or an adapter by itself. The model is any folder `make sft / dpo / export / merge-lora` writes, a LoRA
adapter (+ its base), or a Hub id; the sampling settings come from YAML (configs/chat/*.yaml) with CLI overrides,
on top of the model's generation_config, which holds its stop tokens.

Commands at the prompt: /clear forgets the conversation (the system prompt stays), /exit (or Ctrl-D) leaves. When
the conversation outgrows the model's context, its oldest exchanges are left out of the prompt, and it says so.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from threading import Thread

logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)  # its CPU import warning: see recipes/sft.py

import torch  # noqa: E402
from transformers import TextIteratorStreamer, set_seed  # noqa: E402

from llm_recipes.checkpoints import DTYPES, load_chat_model, resolve_source  # noqa: E402
from llm_recipes.config import ConfigError, RecipeParser  # noqa: E402
from llm_recipes.preference import fit_prompt  # noqa: E402
from llm_recipes.tokenizer import load_chat_tokenizer, stop_names  # noqa: E402


@dataclass
class ChatArguments:
    model_name_or_path: str = field(
        default="outputs/tiny/export",
        metadata={"help": "A chat model folder (export, SFT, DPO, merged), a LoRA adapter folder, or a Hub id."})
    base_model_name_or_path: str | None = field(
        default=None, metadata={"help": "For an adapter: its base model (default: the one in adapter_config.json)."})
    system_prompt: str | None = field(default=None, metadata={"help": "A system turn before the conversation."})
    do_sample: bool = field(default=True, metadata={"help": "Sample (temperature, top_p); false: greedy."})
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature."})
    top_p: float = field(default=0.9, metadata={"help": "Nucleus sampling: the smallest token set with this mass."})
    max_new_tokens: int = field(default=256, metadata={"help": "Longest answer, in tokens."})
    repetition_penalty: float = field(default=1.0, metadata={"help": "> 1 discourages repeating tokens (1: off)."})
    seed: int = field(default=42, metadata={"help": "Seeds sampling: the same conversation gives the same answers."})
    dtype: str = field(default="float32", metadata={"help": "dtype to run in.", "choices": list(DTYPES)})

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.do_sample and not (self.temperature > 0 and 0 < self.top_p <= 1):
            raise ConfigError(f"sampling needs temperature > 0 and top_p in (0, 1], got {self.temperature}, "
                              f"{self.top_p}")


def make_parser() -> RecipeParser:
    return RecipeParser(ChatArguments)


def load(args: ChatArguments):
    source = resolve_source(args.model_name_or_path, args.base_model_name_or_path)
    tokenizer = load_chat_tokenizer(source.tokenizer_path, hint="chat with an SFT, DPO or exported model")
    model = load_chat_model(source, tokenizer, DTYPES[args.dtype])
    if args.max_new_tokens >= model.config.max_position_embeddings:
        raise ConfigError(f"max_new_tokens {args.max_new_tokens} leaves no room for the conversation in the model's "
                          f"context of {model.config.max_position_embeddings} tokens")
    config = model.generation_config
    config.update(do_sample=args.do_sample, max_new_tokens=args.max_new_tokens,
                  repetition_penalty=args.repetition_penalty,
                  **({"temperature": args.temperature, "top_p": args.top_p} if args.do_sample else
                     {"temperature": None, "top_p": None, "top_k": None}))
    return model, tokenizer


def answer(model, tokenizer, messages: list[dict], out=sys.stdout) -> str:
    """Stream one answer to `out` as it is generated; returns its text (special tokens left out)."""
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True,
                                           return_tensors="pt").to(model.device)
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    thread = Thread(target=model.generate, kwargs={**inputs, "streamer": streamer})
    thread.start()
    text = ""
    for piece in streamer:
        out.write(piece)
        out.flush()
        text += piece
    thread.join()
    out.write("\n")
    return text


def chat(args: ChatArguments, model, tokenizer) -> None:
    system = [{"role": "system", "content": args.system_prompt}] if args.system_prompt else []
    context = model.config.max_position_embeddings
    mode = f"sampling at temperature {args.temperature}, top_p {args.top_p}" if args.do_sample else "greedy"
    print(f"Chatting with {args.model_name_or_path} ({mode}; stops at "
          f"{', '.join(stop_names(model.generation_config, tokenizer))}). /clear starts over, /exit leaves.", flush=True)
    history: list[dict] = []
    while True:
        try:
            line = input(">>> ")
        except EOFError:
            print()
            return
        command = line.strip()
        if command == "/exit":
            return
        if command == "/clear":
            history = []
            print("(conversation cleared)", flush=True)
            continue
        if not command:
            continue
        turn = [{"role": "user", "content": line}]
        prompt, fit = fit_prompt(tokenizer, system + history + turn, context - args.max_new_tokens)
        if fit == "prompt_too_long":
            print(f"(that message alone is longer than the model's context of {context} tokens)", flush=True)
            continue
        if fit == "prompt_trimmed":
            print("(the oldest exchanges no longer fit the model's context and are left out)", flush=True)
        with torch.no_grad():
            reply = answer(model, tokenizer, prompt)
        history += turn + [{"role": "assistant", "content": reply}]


def main(argv: list[str] | None = None) -> None:
    parser = make_parser()
    (args,) = parser.parse(argv)
    try:
        model, tokenizer = load(args)
    except (ConfigError, OSError) as e:
        parser.error(str(e))
    set_seed(args.seed)
    try:
        chat(args, model, tokenizer)
    except KeyboardInterrupt:
        print()


if __name__ == "__main__":
    main(sys.argv[1:])
