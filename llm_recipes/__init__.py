"""Shared logic of the llm-recipes scripts: config parsing, run records, model presets, corpus, training glue."""

import logging
import warnings

# Console noise that tells a user nothing, silenced here by module and message, and only here. Everything else still
# prints (the fp32 fallback, dropped records, a base model given to DPO, ...); noise whose cause is ours is fixed at
# the cause instead (pin_memory without an accelerator, lengths counted without the length check).

# bitsandbytes (installed for QLoRA) logs a failed optional CPU-kernel import whenever DeepSpeed imports it.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)


class _WithoutMessages(logging.Filter):
    def __init__(self, *starts: str):
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.starts)


# DeepSpeed, imported by every training run, finds no GPU on a CPU machine and says so as a warning each time.
logging.getLogger("DeepSpeed").addFilter(_WithoutMessages("Setting accelerator to CPU"))
# TRL 1.16 reads transformers' deprecated `is_gradient_checkpointing` itself (trl/models/utils.py).
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
