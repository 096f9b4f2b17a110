"""Serve a chat model behind an OpenAI-compatible API, on this machine only unless asked otherwise.

    python recipes/serve.py --config configs/chat/serve.yaml --model_name_or_path outputs/tiny/export
    make serve                                        # then: curl / the openai client on http://127.0.0.1:8000/v1

transformers' own server (`transformers serve`: FastAPI + uvicorn; /v1/models, /v1/chat/completions with and
without streaming, the model's chat template and generation_config, so its stop tokens), pinned to one model, behind
llm_recipes/serving.py's guard: an API key when the environment variable named by `api_key_env` is set (never
printed or logged), a 4xx with a JSON error for a request the model cannot take (not JSON, empty messages, a prompt
longer than the context, an unknown model), the default answer budget. On a GPU machine with the vLLM venv
(`make vllm-venv`), `vllm serve <folder>` serves the same folder faster (README: Talk to it).
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field

logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)  # its CPU import warning: see recipes/sft.py

from transformers import AutoConfig  # noqa: E402

from llm_recipes.checkpoints import resolve_source  # noqa: E402
from llm_recipes.config import ConfigError, RecipeParser  # noqa: E402
from llm_recipes.serving import RequestGuard, build_app  # noqa: E402
from llm_recipes.tokenizer import load_chat_tokenizer  # noqa: E402

logger = logging.getLogger("serve")


@dataclass
class ServeArguments:
    model_name_or_path: str = field(
        default="outputs/tiny/export",
        metadata={"help": "A chat model folder (export, SFT, DPO, merged), a LoRA adapter (applied to its base and "
                          "merged at start) or a Hub id; clients name it as given."})
    host: str = field(default="127.0.0.1", metadata={"help": "Address to listen on; 0.0.0.0 opens it to the "
                                                             "network (set an API key then)."})
    port: int = field(default=8000, metadata={"help": "Port to listen on."})
    api_key_env: str = field(
        default="LLM_RECIPES_API_KEY",
        metadata={"help": "Name of the environment variable holding the API key clients must send as "
                          "`Authorization: Bearer <key>` (the openai client's api_key); unset or empty: no key. The "
                          "key itself is never a flag, so it stays out of shell history, ps and the logs."})
    max_tokens: int = field(default=256, metadata={"help": "Answer budget of a request that sets no max_tokens."})
    dtype: str = field(default="auto", metadata={"help": "dtype to load the model in (auto: as saved)."})
    seed: int | None = field(default=42, metadata={"help": "Seeds sampling once at start."})
    log_level: str = field(default="warning", metadata={"help": "uvicorn's and transformers' log level."})


def make_parser() -> RecipeParser:
    return RecipeParser(ServeArguments)


def check_model(args: ServeArguments):
    """The tokenizer (it must have a chat template) and the context length, or one ConfigError line."""
    source = resolve_source(args.model_name_or_path)
    if source.kind == "zero":
        raise ConfigError(f"{source.path} is a ZeRO checkpoint: serve a model folder (make consolidate, make export)")
    tokenizer = load_chat_tokenizer(source.tokenizer_path, hint="serve an SFT, DPO or exported model")
    try:
        context = AutoConfig.from_pretrained(source.base or source.path).max_position_embeddings
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read the config of {args.model_name_or_path}: {str(e).splitlines()[0]}") from None
    if args.max_tokens >= context:
        raise ConfigError(f"max_tokens {args.max_tokens} leaves no room for a prompt in the context of {context}")
    return tokenizer, context


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    parser = make_parser()
    (args,) = parser.parse(argv)
    try:
        tokenizer, context = check_model(args)
        app = build_app(args.model_name_or_path, args.dtype, args.seed)
    except (ConfigError, OSError) as e:
        parser.error(str(e))
    key = os.environ.get(args.api_key_env) or None
    app.add_middleware(RequestGuard, model=args.model_name_or_path, tokenizer=tokenizer, context=context, max_tokens=args.max_tokens, api_key=key)
    logger.info("serving %s on http://%s:%d/v1 (OpenAI-compatible: /v1/models, /v1/chat/completions); %s",
                args.model_name_or_path, args.host, args.port,
                f"clients send the key in ${args.api_key_env}" if key else
                f"no API key (set {args.api_key_env} to require one)")
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main(sys.argv[1:])
