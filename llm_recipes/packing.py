"""Tokenize documents and pack them into fixed-length blocks: no padding, one EOS after every document.

Two `datasets.map` passes, each cached by fingerprint: (1) encode each document and append EOS, (2) concatenate the
documents of each group of `pack_batch_size` and cut the stream into `block_size` blocks. The tail of a group that
does not fill a block is dropped and counted (as run_clm does): carrying it across groups would serialise the
parallel map. With ~1000 documents a group the loss is a fraction of a percent; `stats.json` reports it exactly.
Labels are not stored: the collator derives them from `input_ids`.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import itertools

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from transformers import PreTrainedTokenizerFast

from llm_recipes.corpus import step_fingerprint

TOKEN_FEATURES = datasets.Features({"input_ids": datasets.Sequence(datasets.Value("int32"))})


# Documents per call of the batch encoder. A call's encodings (ids, token strings, per-token Python ints) live only
# until they are copied into one int32 array, so a group's transient memory is that of 100 documents, not of the whole
# group (a per-file pack task of 3,000-character documents: ~100 MiB lower at its peak). Not a setting: the ids are the
# same for any chunk size.
ENCODE_CHUNK = 100


def encode_ids(texts: list[str], tokenizer: PreTrainedTokenizerFast) -> tuple[np.ndarray, np.ndarray]:
    """Every document's ids followed by EOS, as one int32 array, and each document's length (EOS included)."""
    backend = tokenizer.backend_tokenizer
    # Corpus text that happens to contain "</s>" or "<|im_start|>" stays text: only EOS below is a special token.
    # Set here, not once outside: the flag is lost when the tokenizer is pickled to the map workers.
    backend.encode_special_tokens = True
    eos, values, lengths = (tokenizer.eos_token_id,), [], np.zeros(len(texts), dtype=np.int64)
    for start in range(0, len(texts), ENCODE_CHUNK):
        # The backend's batch encoder: no offsets or attention masks to build, so it runs at the raw tokenizers speed.
        encodings = backend.encode_batch_fast(texts[start : start + ENCODE_CHUNK], add_special_tokens=False)
        chunk = lengths[start : start + len(encodings)]
        chunk[:] = [len(e) + 1 for e in encodings]
        # Straight to one flat array: per-document Python/NumPy objects cost more than the encoding.
        values.append(np.fromiter(itertools.chain.from_iterable(itertools.chain(e.ids, eos) for e in encodings),
                                  dtype=np.int32, count=int(chunk.sum())))
    return (np.concatenate(values) if values else np.zeros(0, dtype=np.int32)), lengths


def _encode(batch: pa.Table, tokenizer: PreTrainedTokenizerFast) -> pa.Table:
    values, lengths = encode_ids(batch.column("text").to_pylist(), tokenizer)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.table({"input_ids": pa.ListArray.from_arrays(pa.array(offsets), pa.array(values))})


def _pack(batch: pa.Table, block_size: int) -> pa.Table:
    stream = pc.list_flatten(batch.column("input_ids")).to_numpy()
    n_blocks = len(stream) // block_size
    offsets = pa.array(np.arange(n_blocks + 1, dtype=np.int32) * block_size)
    return pa.table({"input_ids": pa.ListArray.from_arrays(offsets, pa.array(stream[: n_blocks * block_size]))})


def tokenize(ds: datasets.Dataset, tokenizer: PreTrainedTokenizerFast, batch_size: int, num_proc: int | None, desc: str):
    tokenizer = copy.deepcopy(tokenizer)  # _encode changes a flag on it; the caller's copy stays as it was
    return ds.with_format("arrow").map(
        _encode,
        batched=True,
        batch_size=batch_size,
        num_proc=num_proc,
        remove_columns=ds.column_names,
        features=TOKEN_FEATURES,
        fn_kwargs={"tokenizer": tokenizer},
        new_fingerprint=step_fingerprint(ds, _encode, tokenizer_fingerprint(tokenizer), batch_size,
                                        inspect.getsource(encode_ids)),
        desc=f"tokenize {desc}",
    ).with_format(None)


def pack(tokens: datasets.Dataset, block_size: int, batch_size: int, num_proc: int | None, desc: str):
    # With num_proc > 1 each worker counts its groups from its own first row, so the blocks depend on num_proc (not in
    # the cache key). Counting from the first document changes the demo's pretraining data, and its DPO model then
    # stopped on 7 of 16 English prompts (12 needed): kept as it is until the demo is retuned.
    return tokens.with_format("arrow").map(
        _pack,
        batched=True,
        batch_size=batch_size,
        num_proc=num_proc,
        features=TOKEN_FEATURES,
        fn_kwargs={"block_size": block_size},
        new_fingerprint=step_fingerprint(tokens, _pack, block_size, batch_size),
        desc=f"pack {desc} into {block_size}-token blocks",
    ).with_format(None)


def count_tokens(ds: datasets.Dataset) -> int:
    column = ds.data.column("input_ids")
    return int(pc.sum(pc.list_value_length(column)).as_py() or 0)


def count_token(ds: datasets.Dataset, token_id: int) -> int:
    flat = pc.list_flatten(ds.data.column("input_ids"))
    return int(pc.sum(pc.equal(flat, token_id)).as_py() or 0)


def split_stats(documents: int, empty_skipped: int, tokens: int, blocks: int, block_size: int, pads: int) -> dict:
    """A packed split's counts as stats.json reports them, whichever path packed it."""
    return {
        "documents": documents,
        "empty_documents_skipped": empty_skipped,
        "tokens": tokens,  # EOS after each document included
        "blocks": blocks,
        "block_size": block_size,
        "packed_tokens": blocks * block_size,
        "dropped_tail_tokens": tokens - blocks * block_size,
        "real_token_share": 1.0 - pads / max(blocks * block_size, 1),
    }


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerFast) -> str:
    """sha256 of the serialized tokenizer: pretraining compares it with the one it is given."""
    return hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode("utf-8")).hexdigest()


def block_batch(examples: list[dict]):
    """The int64 batch of packed blocks: lists from the Arrow format, arrays from memory-mapped shards."""
    import torch

    rows = [ex["input_ids"] for ex in examples]
    if rows and isinstance(rows[0], np.ndarray):
        return torch.from_numpy(np.stack(rows)).long()
    return torch.tensor(rows, dtype=torch.long)


class BlockCollator:
    """Causal-LM batches of packed blocks: every block is full, so nothing is padded and every token is a label (the
    loss shifts them), eos included. transformers' DataCollatorForLanguageModeling needs a pad token, which Llama 2 and
    3 lack, and sets every label equal to the pad id to -100: with Qwen, whose pad is its eos, continued pretraining
    would never learn where a document ends. The all-ones attention mask is what that collator passed."""

    def __call__(self, examples: list[dict]) -> dict:
        import torch

        input_ids = block_batch(examples)
        return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": input_ids.clone()}


class DocumentMaskingCollator:
    """Causal-LM batches of packed blocks whose documents never attend to each other: `position_ids` restart after
    every EOS and no attention mask is passed, so transformers builds a block-diagonal causal mask from them (sdpa and
    eager; flash-attention's varlen kernels read the same boundaries). It holds only without a KV cache, which the
    recipes turn off in training. Labels are the input ids (the loss shifts them), as in the plain collator."""

    def __init__(self, eos_token_id: int):
        self.eos_token_id = eos_token_id

    def __call__(self, examples: list[dict]) -> dict:
        import torch

        input_ids = block_batch(examples)
        index = torch.arange(input_ids.shape[1]).expand_as(input_ids)
        starts = torch.zeros_like(input_ids, dtype=torch.bool)
        starts[:, 1:] = input_ids[:, :-1] == self.eos_token_id  # a document starts after each EOS
        position_ids = index - torch.where(starts, index, 0).cummax(dim=1).values
        return {"input_ids": input_ids, "labels": input_ids.clone(), "position_ids": position_ids}


def mixture_budgets(available: np.ndarray, weights: list[float]) -> np.ndarray:
    """Each source's part of the largest weighted mixture that repeats nothing (the rule of TRL's dataset mixtures),
    in the unit of `available` (tokens or blocks): the source scarcest for its weight is taken whole."""
    shares = np.asarray(weights, dtype=float) / sum(weights)
    return shares * min(available / shares)


def with_shares(report: list[dict]) -> list[dict]:
    """A mixture report's entries, each given its realised share of the taken tokens."""
    taken = sum(r["tokens"] for r in report)
    for r in report:
        r["share"] = round(r["tokens"] / max(taken, 1), 4)
    return report


def mix_by_weight(tokens: datasets.Dataset, sources: list[int], weights: list[float],
                  seed: int) -> tuple[list[int], list[dict]]:
    """The documents of a weighted mixture: each source gets `weight` (normalised) of the tokens, the mixture as large
    as it can be without repeating a document (mixture_budgets). Documents are drawn in a seeded order within each
    source, then all interleaved, so blocks mix the sources. Returns the row indices and, per source, the documents
    and tokens taken and the realised token share."""
    lengths = pc.list_value_length(tokens.data.column("input_ids")).to_numpy()
    sources = np.asarray(sources)
    available = np.array([lengths[sources == i].sum() for i in range(len(weights))], dtype=float)
    rng = np.random.default_rng(seed)
    picked, report = [], []
    for i, budget in enumerate(mixture_budgets(available, weights)):
        rows = rng.permutation(np.flatnonzero(sources == i))
        take = rows[: int(np.searchsorted(np.cumsum(lengths[rows]), budget, side="right"))]
        picked.append(take)
        report.append({"source": i, "weight": float(weights[i]), "documents": len(take),
                       "tokens": int(lengths[take].sum()), "available_tokens": int(available[i])})
    with_shares(report)
    return rng.permutation(np.concatenate(picked)).tolist(), report
