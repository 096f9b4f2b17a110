"""Shared logic of the llm-recipes scripts: config parsing, run records, model presets, corpus, training glue."""

import logging

# bitsandbytes (installed for QLoRA) logs a failed optional CPU-kernel import whenever DeepSpeed imports it.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
