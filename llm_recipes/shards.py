"""Packed blocks as compact binary shards: 2 bytes a token where the vocabulary fits in uint16, read memory-mapped.

The format (`recipes/pack.py --output_format shards`), in the spirit of Megatron's indexed files and nanotron's
datatrove shards:

    index.json            format, dtype, block_size, the tokenizer's sha256, per split its shards and counts
    train/00000.bin       raw little-endian token ids, blocks back to back (no header: the index says the shape)
    validation/00000.bin

A block is `block_size` ids; shard i holds `blocks` of them. Pretraining reads them with `PackedBlocks`, a map-style
dataset over `numpy.memmap`s: nothing is loaded, each row is cast to int64 when read, and the length and row order
are those of the Arrow format the same `pack` wrote, so the Trainer's seeded sampler (and a resumed run) draws the
same blocks in the same order from either.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from llm_recipes.config import ConfigError

FORMAT = "llm-recipes-blocks/1"
INDEX = "index.json"


def shard_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits (vocabularies up to 65,536: ours, Llama 2, Mistral), else uint32 (Llama 3, Qwen)."""
    return np.dtype("<u2") if vocab_size <= 2**16 else np.dtype("<u4")


def write_split(blocks, folder: Path, split: str, dtype: np.dtype, shard_blocks: int) -> dict:
    """Write a `datasets` split of packed blocks (an `input_ids` list column) as shards of at most `shard_blocks`
    blocks under folder/split/; returns its index entry. Reads the Arrow table in batches: memory stays one batch."""
    import pyarrow.compute as pc

    (folder / split).mkdir(parents=True, exist_ok=True)
    shards, current, in_shard = [], None, 0

    def close():
        if current is not None:
            current.close()
            shards[-1]["blocks"] = in_shard

    for batch in blocks.data.to_batches(max_chunksize=min(shard_blocks, 8192)):
        ids = pc.list_flatten(batch.column("input_ids")).to_numpy()
        rows = ids.reshape(len(batch), -1) if len(batch) else ids.reshape(0, 0)
        while len(rows):
            if current is None or in_shard == shard_blocks:
                close()
                name = f"{split}/{len(shards):05d}.bin"
                shards.append({"file": name, "blocks": 0})
                current, in_shard = open(folder / name, "wb"), 0
            take = rows[: shard_blocks - in_shard]
            current.write(np.ascontiguousarray(take, dtype=dtype).tobytes())
            in_shard += len(take)
            rows = rows[len(take):]
    close()
    return {"shards": shards, "blocks": sum(s["blocks"] for s in shards)}


def format_stats(output_format: str, dtype: np.dtype) -> dict:
    """stats.json's `format` entry: how the blocks are stored and what a token costs on disk."""
    return {"output_format": output_format, "dtype": dtype.name, "bytes_per_token": dtype.itemsize}


def write_index(folder: Path, dtype: np.dtype, block_size: int, tokenizer: dict, splits: dict) -> dict:
    index = {"format": FORMAT, "dtype": dtype.name, "block_size": block_size, "tokenizer": tokenizer,
             "bytes_per_token": dtype.itemsize, "splits": splits}
    (folder / INDEX).write_text(json.dumps(index, indent=2) + "\n")
    return index


class PackedBlocks:
    """One split's blocks as a map-style dataset: row i is {"input_ids": int64 array of block_size ids}. The shards are
    opened on first read in each process (a DataLoader worker or rank opens its own maps; nothing is pickled but
    paths)."""

    def __init__(self, folder: Path, index: dict, split: str):
        self.block_size, self.dtype = index["block_size"], np.dtype(index["dtype"])
        shards = index["splits"][split]["shards"]
        self.files = [Path(folder) / s["file"] for s in shards]
        self.file_blocks = [s["blocks"] for s in shards]
        # a weighted mixture reads the first `used_blocks` of a shard (recipes/pack.py's per-file path)
        self.counts = [s.get("used_blocks", s["blocks"]) for s in shards]
        self.starts = np.cumsum([0, *self.counts])
        for file, count in zip(self.files, self.file_blocks):
            expected = count * self.block_size * self.dtype.itemsize
            if not file.is_file() or file.stat().st_size != expected:
                found = f"{file.stat().st_size} bytes" if file.is_file() else "missing"
                raise ConfigError(f"{file}: {found}, but {INDEX} says {count} blocks of {self.block_size} "
                                  f"{self.dtype.name} ids ({expected} bytes): repack (make pack)")
        self._maps = None

    def __len__(self) -> int:
        return int(self.starts[-1])

    def shards(self) -> list[np.ndarray]:
        if self._maps is None:
            self._maps = [np.memmap(f, dtype=self.dtype, mode="r", shape=(n, self.block_size))[:used] if used else
                          np.zeros((0, self.block_size), self.dtype)
                          for f, n, used in zip(self.files, self.file_blocks, self.counts)]
        return self._maps

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < len(self):
            raise IndexError(i)
        shard = int(np.searchsorted(self.starts, i, side="right")) - 1
        return {"input_ids": self.shards()[shard][i - self.starts[shard]].astype(np.int64)}

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_maps": None}

    def max_id(self) -> int:
        return max((int(m.max()) for m in self.shards() if len(m)), default=0)


def load_packed(path: Path) -> tuple[dict, dict]:
    """The packed splits of recipes/pack.py's output folder (shards or a `datasets.DatasetDict`) and its stats.json."""
    if not (path / "stats.json").exists() or not ((path / INDEX).exists() or (path / "dataset_dict.json").exists()):
        raise ConfigError(f"dataset_path {path}: not a packed dataset (run `make pack` first)")
    stats = json.loads((path / "stats.json").read_text())
    if not (path / INDEX).exists():
        import datasets

        return dict(datasets.load_from_disk(str(path))), stats
    index = json.loads((path / INDEX).read_text())
    if index.get("format") != FORMAT:
        raise ConfigError(f"{path / INDEX}: format {index.get('format')!r}, expected {FORMAT!r}: repack (make pack)")
    return {split: PackedBlocks(path, index, split) for split in index["splits"]}, stats


def max_token_id(split) -> int:
    """The largest id in a packed split of either format."""
    if isinstance(split, PackedBlocks):
        return split.max_id()
    import pyarrow.compute as pc

    return pc.max(pc.list_flatten(split.data.column("input_ids"))).as_py() or 0
