"""An OpenAI-compatible server for one chat model: transformers' own `transformers serve` app (FastAPI: /v1/models,
/v1/chat/completions with and without streaming, the model's chat template and generation_config), pinned to the
model, behind a guard that checks each request before the model sees it.

The guard (a plain ASGI middleware) answers with an OpenAI-style JSON error and a 4xx, and the server lives on:
- 401 without the API key, when the server has one (`Authorization: Bearer <key>`, compared in constant time);
- 400 for a body that is not JSON, messages that are not a non-empty list of {role, content}, a conversation the
  chat template cannot render, or a prompt that with its answer budget does not fit the model's context (a 100k
  character prompt would otherwise run a quadratic attention over 100k tokens on a 1k-token model);
- 404 for a model other than the one served (OpenAI's `model_not_found`), and for /load_model and /reset: a server
  pinned to one model has no use for them, and /load_model would download any Hub model a client names.
A request without max_tokens gets the server's default (transformers would allow 1,024 new tokens, more than a small
model's context).
"""

from __future__ import annotations

import hmac
import json
from pathlib import Path
from typing import Any

import torch

from llm_recipes.chat_data import prompt_tokens
from llm_recipes.checkpoints import load_chat_model, load_tokenizer, resolve_source

CLOSED = ("/load_model", "/reset")


def is_adapter(name: str) -> bool:
    return (Path(name) / "adapter_config.json").is_file()


def build_app(model: str, dtype: str = "auto", seed: int | None = None):
    """transformers' serving app for `model` alone, as `transformers serve <model>` builds it, without starting it;
    a LoRA adapter is loaded (and merged) by our load_chat_model, everything else by transformers as it would."""
    from transformers.cli.serving.chat_completion import ChatCompletionHandler
    from transformers.cli.serving.completion import CompletionHandler
    from transformers.cli.serving.model_manager import ModelManager
    from transformers.cli.serving.response import ResponseHandler
    from transformers.cli.serving.server import build_server
    from transformers.cli.serving.systemone import SystemOneHandler
    from transformers.cli.serving.transcription import TranscriptionHandler
    from transformers.cli.serving.utils import GenerationState, set_torch_seed

    class AdapterAwareManager(ModelManager):
        def _load_processor(self, model_id, gguf_file=None):
            if not is_adapter(model_id):
                return super()._load_processor(model_id, gguf_file=gguf_file)
            return load_tokenizer(resolve_source(model_id))

        def _load_model(self, model_id, **kwargs):
            if not is_adapter(model_id):
                return super()._load_model(model_id, **kwargs)
            source = resolve_source(model_id)
            merged = load_chat_model(source, load_tokenizer(source))
            return merged.to("cuda") if torch.cuda.is_available() else merged

    if seed is not None:
        set_torch_seed(seed)
    manager = AdapterAwareManager(device="auto", dtype=dtype, trust_remote_code=False, attn_implementation=None,
                                  continuous_batching=False, quantization=None, model_timeout=-1, force_model=model)
    state = GenerationState(continuous_batching=False, compile=False, cb_config=None)
    return build_server(
        manager, ChatCompletionHandler(model_manager=manager, generation_state=state, chat_template_kwargs={}),
        completion_handler=CompletionHandler(model_manager=manager, generation_state=state),
        response_handler=ResponseHandler(model_manager=manager, generation_state=state, chat_template_kwargs={}),
        transcription_handler=TranscriptionHandler(manager, state),
        systemone_handler=SystemOneHandler(model_manager=manager, generation_state=state, chat_template_kwargs={}),
        generation_state=state)


def error_body(message: str, kind: str, code: str | None = None) -> bytes:
    return json.dumps({"error": {"message": message, "type": kind, "code": code}}).encode()


class RequestGuard:
    """ASGI middleware: API key, request shape and length, closed endpoints (see the module docstring)."""

    def __init__(self, app, model: str, tokenizer, context: int, max_tokens: int, api_key: str | None = None):
        self.app, self.model, self.tokenizer, self.context, self.max_tokens = app, model, tokenizer, context, max_tokens
        self._key = f"Bearer {api_key}".encode() if api_key else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"].rstrip("/")
        if self._key and path != "/health":
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self._key):
                return await self._reply(send, 401, "invalid or missing API key", "invalid_api_key")
        if path in CLOSED:
            return await self._reply(send, 404, f"{path} is not served: this server serves one model",
                                     "invalid_request_error")
        if scope["method"] != "POST" or path != "/v1/chat/completions":
            return await self.app(scope, receive, send)
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        try:
            request = json.loads(body)
        except ValueError as e:
            return await self._reply(send, 400, f"the request body is not JSON ({e})", "invalid_request_error")
        if isinstance(request, dict) and request.get("model") not in (None, self.model):
            return await self._reply(send, 404, f"the model {request['model']!r} does not exist here; this server "
                                     f"serves {self.model!r}", "invalid_request_error", "model_not_found")
        problem = self.check(request)
        if problem:
            return await self._reply(send, 400, problem, "invalid_request_error")
        body = json.dumps(request).encode()
        headers = [(k, v) for k, v in scope["headers"] if k != b"content-length"]
        scope = {**scope, "headers": [*headers, (b"content-length", str(len(body)).encode())]}
        sent = False

        async def replay():  # the checked body once, then the client's own messages (a disconnect)
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)

    def check(self, request: Any) -> str | None:
        """What is wrong with a chat completion request, or None; fills in the default max_tokens."""
        if not isinstance(request, dict):
            return "the request must be a JSON object"
        messages = request.get("messages")
        if not isinstance(messages, list) or not messages or not all(
                isinstance(m, dict) and "role" in m and "content" in m for m in messages):
            return "messages must be a non-empty list of {role, content}"
        try:
            prompt = prompt_tokens(self.tokenizer, messages)
        except Exception as e:  # the template's own complaint (roles out of order, content not text, ...)
            return f"the chat template cannot render these messages: {str(e).splitlines()[0] if str(e) else e!r}"
        budget = request.get("max_completion_tokens") or request.get("max_tokens")
        if budget is None:
            budget = request["max_tokens"] = min(self.max_tokens, max(1, self.context - prompt))
        if not isinstance(budget, int) or budget < 1:
            return f"max_tokens must be a positive integer, got {budget!r}"
        if prompt + budget > self.context:
            return (f"the prompt is {prompt} tokens and max_tokens {budget}: more than this model's context of "
                    f"{self.context} tokens")
        return None

    @staticmethod
    async def _reply(send, status: int, message: str, kind: str, code: str | None = None) -> None:
        body = error_body(message, kind, code)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
