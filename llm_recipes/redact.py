"""Secrets stay out of every file a run writes: command lines in run records, pickled training arguments, exports.

A Hub token reaches a run from the environment (HF_TOKEN), the saved login, or, when a user passes it, the
`hub_token` flag. The flag's value is moved into this process's environment, where huggingface_hub finds it, so the
Trainer never pickles it into training_args.bin; command lines are recorded with secret-valued flags and anything
shaped like a token replaced.
"""

from __future__ import annotations

import os
import re

REDACTED = "<redacted>"
HUB_TOKEN_PATTERN = re.compile(r"\bhf_[A-Za-z0-9]{30,}\b")  # the shape of Hub access tokens
SECRET_FLAG = re.compile(r"^--?[\w.-]*(token|api_key|apikey|secret|password)$", re.IGNORECASE)


def redact_text(text: str) -> str:
    return HUB_TOKEN_PATTERN.sub(REDACTED, text)


def redact_argv(argv: list[str]) -> list[str]:
    """`--hub_token X`, `--hub_token=X`, `--wandb_api_key X` ... -> <redacted>, and any token-shaped value."""
    out, hide_next = [], False
    for arg in argv:
        key, eq, _ = arg.partition("=")
        if hide_next:
            out.append(REDACTED)
        elif eq and SECRET_FLAG.match(key):
            out.append(f"{key}={REDACTED}")
        else:
            out.append(redact_text(arg))
        hide_next = not eq and bool(SECRET_FLAG.match(arg)) and not hide_next
    return out


def move_hub_token_to_env(training_args) -> None:
    """Call in a TrainingArguments subclass's __post_init__: the token given as `hub_token` is used from HF_TOKEN
    (huggingface_hub reads it at each call), and the arguments the Trainer pickles into every checkpoint hold None."""
    if getattr(training_args, "hub_token", None):
        os.environ["HF_TOKEN"] = training_args.hub_token
        training_args.hub_token = None
