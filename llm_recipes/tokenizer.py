"""Byte-level BPE that outside runtimes reproduce exactly, with the special tokens and chat template of this repo.

Pre-tokenizer: Qwen2's split regex, then byte-level mapping without a regex of its own (as Qwen2's tokenizer.json).
Why Qwen2's and not GPT-2's: it splits digits one by one (arithmetic-friendly, and what LLaMA does), and llama.cpp's
converter knows it by name (`qwen2`), so a GGUF export tokenizes exactly as transformers does. No normaliser: Unicode
clean-up (NFC, ftfy) is data_prep's job, and llama.cpp applies none on its BPE path, so one here would make the two
runtimes disagree on un-normalised input.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast
from transformers.convert_slow_tokenizer import bytes_to_unicode

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


def end_of_turn_id(tokenizer) -> int | None:
    """The special token the chat template writes right after an assistant's answer: Llama 3's <|eot_id|>, Qwen's
    and ChatML's <|im_end|>, Llama 2's and Mistral's </s>. None without a template or a special token there."""
    if not tokenizer.chat_template:
        return None
    probe = "Probe answer 7"
    try:
        conversation = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": probe}]
        text = tokenizer.apply_chat_template(conversation, tokenize=False)
    except Exception:  # a template with demands of its own (tools, a system turn): stop at eos only
        return None
    special = set(tokenizer.all_special_ids) | {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    after = tokenizer(text[text.rindex(probe) + len(probe):], add_special_tokens=False)["input_ids"]
    return next((i for i in after if i in special), None)


def stop_token_ids(tokenizer) -> list[int]:
    """Where generation stops: the tokenizer's eos (a base model's end of document, first as in Meta's and Qwen's
    generation_config) and the token the chat template closes an assistant turn with: Llama 3 ends a turn with
    <|eot_id|>, not its eos <|end_of_text|>."""
    ids = [i for i in (tokenizer.eos_token_id, end_of_turn_id(tokenizer)) if i is not None]
    return list(dict.fromkeys(ids))


def set_stop_tokens(generation_config, tokenizer) -> None:
    """A chat model's generation_config: stop at the template's end of turn and the eos, pad with the pad token."""
    ids = stop_token_ids(tokenizer)
    generation_config.eos_token_id = ids if len(ids) > 1 else ids[0]
    generation_config.pad_token_id = tokenizer.pad_token_id


def stop_names(generation_config, tokenizer) -> list[str]:
    """The tokens a saved generation_config stops at, by name (for the model card)."""
    ids = generation_config.eos_token_id
    return tokenizer.convert_ids_to_tokens([ids] if isinstance(ids, int) else list(ids or []))


# What a folder needs for AutoTokenizer: a fast tokenizer file, a SentencePiece / tiktoken model, or BPE vocab + merges
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "spiece.model", "sentencepiece.bpe.model", "tiktoken.model",
                   "vocab.json")


def tokenizer_from(name: str | Path, **kwargs):
    """AutoTokenizer.from_pretrained (quick to hash: quick_to_hash), or one ConfigError line: a model folder saved
    without its tokenizer (a bare config.json + safetensors) otherwise ends in a 20-line transformers ValueError about
    sentencepiece and tiktoken."""
    folder = Path(name)
    if folder.is_dir() and not any((folder / f).is_file() for f in TOKENIZER_FILES):
        raise ConfigError(f"{name}: no tokenizer files ({', '.join(TOKENIZER_FILES[:2])} or vocab.json + merges.txt); "
                          "save the tokenizer with the model (tokenizer.save_pretrained) or set tokenizer_name_or_path")
    try:
        return quick_to_hash(AutoTokenizer.from_pretrained(str(name), **kwargs))
    except (OSError, ValueError, TypeError) as e:
        raise ConfigError(f"cannot load the tokenizer of {name}: {str(e).strip().splitlines()[0]}") from None


def load_chat_tokenizer(name: str, revision: str | None = None, trust_remote_code: bool = False,
                        template_path: str | None = None, hint: str = "set chat_template_path"):
    """The tokenizer of a chat recipe (SFT, DPO): it must bring a chat template, or the recipe names one."""
    tokenizer = tokenizer_from(name, revision=revision, trust_remote_code=trust_remote_code)
    if template_path is None and not tokenizer.chat_template:
        raise ConfigError(f"tokenizer {name} has no chat template: train one with make tokenizer (ChatML), or {hint}")
    return tokenizer


def quick_to_hash(tokenizer):
    """Drop the Python copies of the vocabulary and merges that a family's tokenizer class keeps from building its
    Rust backend (only __init__ reads them; the backend holds both and saves them). `datasets` fingerprints every
    map by pickling the tokenizer: with them, each map of a Qwen 2.5 run spent ~4 s hashing 150k-entry
    Python containers (0.4 s without)."""
    for name in ("_vocab", "_merges"):
        if getattr(tokenizer, "_tokenizer", None) is not None and name in tokenizer.__dict__:
            del tokenizer.__dict__[name]
    return tokenizer


# --- assistant-only loss on a family's own template -------------------------------------------------------------------

TEMPLATES = Path(__file__).parent / "chat_templates"


def _training_templates() -> dict[str, str]:
    """original template -> the same template with {% generation %} markers, for the families TRL does not patch."""
    from trl.chat_template_utils import llama3_1_chat_template

    return {llama3_1_chat_template: (TEMPLATES / "llama3_1_training.jinja").read_text(encoding="utf-8"),
            (TEMPLATES / "llama2.jinja").read_text(encoding="utf-8"):
                (TEMPLATES / "llama2_training.jinja").read_text(encoding="utf-8")}


def masking_template(tokenizer, name: str) -> str | None:
    """The template SFT masks with when it computes the loss on assistant turns only: None when the model's own one
    has {% generation %} markers or TRL knows its training variant (Qwen 2.5, Llama 3.0, Gemma, Phi-3, ...), ours for
    Llama 3.1 and Llama 2; otherwise a ConfigError naming the fix. Never a silent loss on every token."""
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    template = tokenizer.chat_template
    if has_generation_markers(template):
        return None
    ours = _training_templates().get(template)
    if ours is not None:
        return ours
    try:
        if get_training_chat_template(tokenizer) is not None:
            return None  # TRL swaps its training variant in itself, and keeps the original for saving
    except ValueError:
        pass
    raise ConfigError(
        f"the chat template of {name} has no {{% generation %}} markers and no known training variant, so "
        "assistant_only_loss cannot tell the answers from the prompts: set chat_template_path to a copy of the "
        "template with {% generation %}...{% endgeneration %} around each assistant answer and its end-of-turn "
        "token (llm_recipes/chat_templates/ has examples), or assistant_only_loss: false to train on every token")


LENGTH_WARNED = "sequence-length-is-longer-than-the-specified-maximum"  # transformers' warn-once flag


@contextmanager
def tokenizing_quietly(tokenizer, template: str | None = None):
    """While a TRL trainer tokenizes its data (in its __init__): quiet transformers' "longer than the specified
    maximum ... will result in indexing errors" (TRL cuts every row at max_length itself, so no such row ever reaches
    the model), and render with `template` if given (SFT's masking variant), then put the model's own template back,
    so that checkpoints and the saved model carry the original (the one users and inference servers render with)."""
    original, warned = tokenizer.chat_template, tokenizer.deprecation_warnings.get(LENGTH_WARNED)
    tokenizer.chat_template = template or original
    tokenizer.deprecation_warnings[LENGTH_WARNED] = True
    try:
        yield
    finally:
        tokenizer.chat_template = original
        if warned is None:
            tokenizer.deprecation_warnings.pop(LENGTH_WARNED, None)


# --- vocabulary extension (Chinese-LLaMA's path, for byte-level BPE) --------------------------------------------------


CJK_RANGES = ((0x3000, 0x9FFF), (0xF000, 0xFFFF))  # CJK symbols, kana, ideographs; compatibility and full-width forms
# their UTF-8 lead bytes (0xE3-0xE9, 0xEF): what a byte-level token of these characters starts with
CJK_LEAD_BYTES = {b for lo, hi in CJK_RANGES for b in range(chr(lo).encode()[0], chr(hi).encode()[0] + 1)}


def _pretokenizer_types(node: dict | None) -> list[str]:
    if not node:
        return []
    return [node["type"], *(t for child in node.get("pretokenizers", []) for t in _pretokenizer_types(child))]


def is_cjk(char: str) -> bool:
    return any(lo <= ord(char) <= hi for lo, hi in CJK_RANGES)


def check_extensible_bpe(tokenizer, name: str) -> tuple[dict, str]:
    """The tokenizer.json of a BPE this repo extends and its kind: "byte-level" (GPT-2, Llama 3, Qwen, this repo's)
    or "byte-fallback" (SentencePiece's BPE as transformers converts it: Llama 2, Mistral); one clear line otherwise."""
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    kind = spec["model"]["type"]
    if kind == "BPE" and spec["model"].get("byte_fallback"):
        return spec, "byte-fallback"
    if kind == "BPE" and "ByteLevel" in _pretokenizer_types(spec.get("pre_tokenizer")):
        return spec, "byte-level"
    raise ConfigError(f"base tokenizer {name} is {kind}: only BPE is extended here (byte-level as GPT-2, Llama 3, Qwen; "
                      "with byte fallback as Llama 2, Mistral), where new tokens and merges appended after the old "
                      "ones leave every old id in place; a Unigram vocabulary (T5, ...) needs sentencepiece's own merge")


def extend_bpe(base, batches: Iterator[list[str]], vocab_size: int, min_frequency: int, length: int | None,
               name: str = "base") -> tuple[PreTrainedTokenizerFast, list[dict]]:
    """Train a BPE of `vocab_size` on the new corpus with the base's own pipeline, then append its merges whose
    result is new to the base (ids after every existing one, merges after every existing one: lowest priority).

    Only CJK tokens are kept (U+3000-U+9FFF: CJK punctuation, kana, Han; U+F000-U+FFFF: compatibility and fullwidth
    forms): on a byte-level BPE, tokens that start with the lead byte of such a character and hold no ASCII byte; on a
    byte-fallback BPE (SentencePiece's), tokens made of such characters only, and first the characters themselves that
    the base spells as UTF-8 bytes. A kept merge can only fire where such a character is, so text without one
    (English, including its curly quotes and dashes) encodes exactly as before, id for id; a merge whose pieces were
    left out never fires either. Returns the extended tokenizer and, per new token, its id and the base ids it split
    into (the embedding rows it starts as the mean of).
    """
    spec, kind = check_extensible_bpe(base, name)
    trained = json.loads(base.train_new_from_iterator(batches, vocab_size=vocab_size, length=length,
                                                      min_frequency=min_frequency).backend_tokenizer.to_str())
    vocab = dict(spec["model"]["vocab"])
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in spec["model"]["merges"]]
    if kind == "byte-level":
        byte_of = {char: byte for byte, char in bytes_to_unicode().items()}

        def new_ok(token):
            return byte_of[token[0]] in CJK_LEAD_BYTES and all(byte_of[c] >= 0x80 for c in token)
    else:
        def new_ok(token):
            return all(is_cjk(c) for c in token)
    next_id = max([*vocab.values(), *(t["id"] for t in spec.get("added_tokens", []))]) + 1
    added = []

    def add(token: str) -> None:
        nonlocal next_id
        vocab[token] = next_id
        added.append({"id": next_id, "token": token,
                      "base_pieces": [t.id for t in base.backend_tokenizer.model.tokenize(token)]})
        next_id += 1

    if kind == "byte-fallback":  # the corpus' characters, most frequent first; merges join only tokens
        for char, _ in sorted(trained["model"]["vocab"].items(), key=lambda kv: kv[1]):
            if len(char) == 1 and char not in vocab and new_ok(char):
                add(char)
    for merge in trained["model"]["merges"]:
        left, right = merge.split(" ") if isinstance(merge, str) else merge
        token = left + right
        if token in vocab or left not in vocab or right not in vocab or not new_ok(token):
            continue
        add(token)
        merges.append((left, right))
    spec["model"]["vocab"] = vocab
    spec["model"]["merges"] = [list(m) for m in merges]
    extended = copy.deepcopy(base)
    extended._tokenizer = Tokenizer.from_str(json.dumps(spec))
    return extended, added
