"""Byte-level BPE that outside runtimes reproduce exactly, with the special tokens and chat template of this repo.

Pre-tokenizer: Qwen2's split regex, then byte-level mapping without a regex of its own (as Qwen2's tokenizer.json).
Why Qwen2's and not GPT-2's: it splits digits one by one (arithmetic-friendly, and what LLaMA does), and llama.cpp's
converter knows it by name (`qwen2`), so a GGUF export tokenizes exactly as transformers does. No normaliser: Unicode
clean-up (NFC, ftfy) is data_prep's job, and llama.cpp applies none on its BPE path, so one here would make the two
runtimes disagree on un-normalised input.
"""

from __future__ import annotations

from collections.abc import Iterator

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from llm_recipes.config import ConfigError

QWEN2_SPLIT_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

BOS, EOS, PAD = "<s>", "</s>", "<pad>"
IM_START, IM_END = "<|im_start|>", "<|im_end|>"  # ChatML role markers: known to llama.cpp, vLLM and TRL
SPECIAL_TOKENS = [BOS, EOS, PAD, IM_START, IM_END]
BYTE_ALPHABET_SIZE = len(pre_tokenizers.ByteLevel.alphabet())  # 256

# ChatML. `{% generation %}` marks what the assistant says (its content and the closing marker, so the model learns to
# stop): TRL's `assistant_only_loss` and `return_assistant_tokens_mask` read it.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{% generation %}{{- message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{{- '\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def min_vocab_size() -> int:
    return BYTE_ALPHABET_SIZE + len(SPECIAL_TOKENS)


def new_bpe() -> Tokenizer:
    tok = Tokenizer(models.BPE(byte_fallback=False))  # byte-level: every byte is a token, so nothing is unknown
    tok.normalizer = None
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def train_bpe(batches: Iterator[list[str]], vocab_size: int, min_frequency: int, length: int | None) -> Tokenizer:
    """Train on an iterator of text batches (streamed: the corpus is never one Python list)."""
    tok = new_bpe()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,  # ids 0..4, in this order
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=True,
    )
    tok.train_from_iterator(batches, trainer=trainer, length=length)
    return tok


def wrap(tok: Tokenizer, model_max_length: int) -> PreTrainedTokenizerFast:
    """The `transformers` tokenizer that `AutoTokenizer.from_pretrained` gives back after `save_pretrained`."""
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=[IM_START, IM_END],
        chat_template=CHAT_TEMPLATE,
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,  # would break lossless decoding (" ." -> ".")
    )


def tokenizer_report(tokenizer: PreTrainedTokenizerFast, texts, batch_size: int = 1000) -> dict:
    """Characters/token and bytes/token per script (en / zh) on held-out text, and the share of the vocab used."""
    from llm_recipes.corpus import script_language

    backend = tokenizer.backend_tokenizer
    totals: dict[str, dict[str, int]] = {}
    used: set[int] = set()
    for start in range(0, len(texts), batch_size):
        batch = texts[start : start + batch_size]
        encodings = backend.encode_batch_fast(batch, add_special_tokens=False)
        for text, enc in zip(batch, encodings):
            row = totals.setdefault(script_language(text), {"documents": 0, "characters": 0, "bytes": 0, "tokens": 0})
            row["documents"] += 1
            row["characters"] += len(text)
            row["bytes"] += len(text.encode("utf-8"))
            row["tokens"] += len(enc.ids)
            used.update(enc.ids)
    for row in totals.values():
        row["chars_per_token"] = round(row["characters"] / max(row["tokens"], 1), 3)
        row["bytes_per_token"] = round(row["bytes"] / max(row["tokens"], 1), 3)
    return {
        "vocab_size": len(tokenizer),
        "vocab_used": len(used),
        "vocab_used_share": round(len(used) / len(tokenizer), 4),
        "by_language": dict(sorted(totals.items())),
    }


def report_markdown(report: dict) -> str:
    lines = [
        "# Tokenizer report (validation split)",
        "",
        f"Vocabulary: {report['vocab_size']:,} tokens, {report['vocab_used']:,} used on the validation split "
        f"({report['vocab_used_share']:.1%}).",
        "",
        "| script | documents | characters | bytes | tokens | chars/token | bytes/token |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for lang, row in report["by_language"].items():
        lines.append(
            f"| {lang} | {row['documents']:,} | {row['characters']:,} | {row['bytes']:,} | {row['tokens']:,} "
            f"| {row['chars_per_token']} | {row['bytes_per_token']} |"
        )
    lines += ["", "Script is decided per document: `zh` when most letters are CJK ideographs, else `en`."]
    return "\n".join(lines) + "\n"


def stop_token_ids(tokenizer) -> list[int]:
    """A chat model ends its turn with <|im_end|>: generation stops there as well as at the tokenizer's eos."""
    ids = [tokenizer.eos_token_id]
    im_end = tokenizer.convert_tokens_to_ids(IM_END) if IM_END in tokenizer.get_vocab() else None
    if im_end is not None and im_end not in ids:
        ids.append(im_end)
    return ids


def set_stop_tokens(generation_config, tokenizer) -> None:
    """A chat model's generation_config: stop at the tokenizer's eos and at <|im_end|>, pad with its pad token."""
    ids = stop_token_ids(tokenizer)
    generation_config.eos_token_id = ids if len(ids) > 1 else ids[0]
    generation_config.pad_token_id = tokenizer.pad_token_id


def load_chat_tokenizer(name: str, revision: str | None = None, trust_remote_code: bool = False,
                        template_path: str | None = None, hint: str = "set chat_template_path"):
    """The tokenizer of a chat recipe (SFT, DPO): it must bring a chat template, or the recipe names one."""
    tokenizer = AutoTokenizer.from_pretrained(name, revision=revision, trust_remote_code=trust_remote_code)
    if template_path is None and not tokenizer.chat_template:
        raise ConfigError(f"tokenizer {name} has no chat template: train one with make tokenizer (ChatML), or {hint}")
    return tokenizer
