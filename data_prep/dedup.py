"""Exact and MinHash near-duplicate removal across the whole corpus, in three datatrove stages.

1. `DedupSignatures` (end of the per-document stage, one file per task): a hash of the normalised text and, per
   document, 14 band hashes of a 112-value MinHash (rensa, Rust) over word 5-grams, or character n-grams for Chinese.
2. `DedupClusters` (one task): documents sharing the exact hash, or any band, are joined (union-find); in each group
   the document that comes first in the source order (source, file, record) is kept, so the choice is the same for
   any number of tasks and any executor. Writes the removed ids with their reason and the id they duplicate.
3. `DedupDrop` (start of the output stage): drops the removed ids, counted as exact_duplicate / near_duplicate.
FineWeb's parameters (5-grams, 14 bands x 8 rows, ≈0.75 Jaccard) are the defaults.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xxhash
from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from data_prep.steps.base import DocStep, StepParams, register
from data_prep.text import normalise_for_exact_dedup


@dataclass
class ExactDedupParams(StepParams):
    pass


@dataclass
class MinhashParams(StepParams):
    n_grams: int = field(default=5, metadata={"help": "FineWeb: word 5-grams as shingles."})
    zh_char_n_grams: int = field(
        default=5, metadata={"help": "Chinese: character n-grams as shingles (whitespace tokens would be whole clauses)."}
    )
    num_buckets: int = field(default=14, metadata={"help": "FineWeb: 14 bands ..."})
    hashes_per_bucket: int = field(default=8, metadata={"help": "... of 8 rows (112 permutations, ≈0.75 Jaccard)."})
    seed: int = field(default=1, metadata={"help": "MinHash permutation seed (datatrove's default)."})
    normalize_numbers: bool = field(
        default=True,
        metadata={"help": "Numbers count as 0 (datatrove/FineWeb text normalisation): pages differing only in dates or "
                  "prices are near-copies. False keeps templated pages with different figures apart."},
    )


@register
class ExactDedup(DocStep):
    """Exact dedup: documents equal after lower-casing and removing punctuation and spaces; first one kept."""

    step_name = "dedup_exact"
    stage = "dedup"
    Params = ExactDedupParams


@register
class MinhashDedup(DocStep):
    """MinHash near-dedup (FineWeb defaults; character n-grams for Chinese); first document of a cluster kept."""

    step_name = "dedup_minhash"
    stage = "dedup"
    Params = MinhashParams


_DROP_PUNCT = re.compile(r"[\W_]+")
_WORD = re.compile(r"[^\W_]+")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


def shingles(text: str, language: str, p: MinhashParams) -> list[str]:
    """Word n-grams (character n-grams for Chinese); none for a text shorter than one n-gram, as in datatrove:
    such snippets are left to exact dedup, since one changed word would make them a different document."""
    if language == "zh":
        chars = _DROP_PUNCT.sub("", text.lower())
        n = p.zh_char_n_grams
        return [chars[i : i + n] for i in range(len(chars) - n + 1)]
    # Shingles only need words to be stable, not spaCy-exact: a plain regex split is several times faster. Numbers
    # become 0, as in datatrove's text normalisation: pages that differ only in dates or counts are near-copies.
    text = text.lower()
    words = _WORD.findall(_NUMBER.sub("0", text) if p.normalize_numbers else text)
    n = p.n_grams
    return [" ".join(words[i : i + n]) for i in range(len(words) - n + 1)]


def band_hashes(text: str, language: str, p: MinhashParams) -> np.ndarray:
    """One hash per band of the MinHash signature; all zeros (never a real band hash) when the text has no n-gram."""
    import rensa

    grams = shingles(text, language, p)
    if not grams:
        return np.zeros(p.num_buckets, dtype=np.uint64)
    m = rensa.RMinHash(num_perm=p.num_buckets * p.hashes_per_bucket, seed=p.seed)
    m.update(grams)
    sig = np.asarray(m.digest(), dtype=np.uint64).reshape(p.num_buckets, p.hashes_per_bucket)
    return np.array([xxhash.xxh64_intdigest(row.tobytes()) for row in sig], dtype=np.uint64)


class DedupSignatures(PipelineStep):
    """Pass documents through; write their exact hash and MinHash bands to signatures/<rank>.npz."""

    type = "data_prep"
    name = "dedup_signatures"

    def __init__(self, folder: str, exact: bool, minhash: MinhashParams | None):
        super().__init__()
        self.folder, self.exact, self.minhash = folder, exact, minhash

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        ids, orders, exact, bands = [], [], [], []
        for doc in data:
            with self.track_time():
                ids.append(doc.id)
                orders.append(doc.metadata["order"])
                if self.exact:
                    exact.append(xxhash.xxh64_intdigest(normalise_for_exact_dedup(doc.text).encode()))
                if self.minhash is not None:
                    bands.append(band_hashes(doc.text, doc.metadata.get("language", "en"), self.minhash))
            yield doc
        Path(self.folder).mkdir(parents=True, exist_ok=True)
        n_bands = self.minhash.num_buckets if self.minhash else 0
        np.savez(
            Path(self.folder) / f"{rank:05d}.npz",
            ids=np.array(ids, dtype=str),
            orders=np.array(orders, dtype=np.int64).reshape(-1, 3),
            exact=np.array(exact, dtype=np.uint64),
            bands=np.array(bands, dtype=np.uint64).reshape(len(ids) if n_bands else 0, n_bands),
        )


def _find(parent: list[int], i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


class DedupClusters(PipelineStep):
    """One task: read every task's signatures, group duplicates, write removed.jsonl (id, reason, duplicate_of)."""

    type = "data_prep"
    name = "dedup_clusters"

    def __init__(self, signatures_folder: str, output_file: str):
        super().__init__()
        self.signatures_folder, self.output_file = signatures_folder, output_file

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        parts = [np.load(p) for p in sorted(Path(self.signatures_folder).glob("*.npz"))]
        ids = np.concatenate([p["ids"] for p in parts]) if parts else np.array([], dtype=str)
        orders = np.concatenate([p["orders"] for p in parts]) if parts else np.zeros((0, 3), np.int64)
        # Sort by source order once: index 0 of every group is then the document to keep.
        by_order = np.lexsort(orders.T[::-1])
        ids = ids[by_order]
        removed: dict[int, tuple[str, int]] = {}
        exact = np.concatenate([p["exact"] for p in parts]) if parts else np.array([])
        if len(exact) == len(ids) and len(ids):
            exact = exact[by_order]
            first: dict[int, int] = {}
            for i, h in enumerate(exact.tolist()):
                if h in first:
                    removed[i] = ("exact_duplicate", first[h])
                else:
                    first[h] = i
        bands = np.concatenate([p["bands"] for p in parts]) if parts else np.zeros((0, 0))
        if bands.shape[1] and len(ids):
            bands = bands[by_order]
            parent = list(range(len(ids)))
            for b in range(bands.shape[1]):
                seen: dict[int, int] = {}
                for i, h in enumerate(bands[:, b].tolist()):
                    if i in removed or h == 0:  # 0: a text too short for one n-gram has no signature
                        continue
                    if h in seen:
                        ri, rj = _find(parent, seen[h]), _find(parent, i)
                        if ri != rj:
                            parent[max(ri, rj)] = min(ri, rj)  # the root is always the earliest document
                    else:
                        seen[h] = i
            for i in range(len(ids)):
                root = _find(parent, i)
                if root != i and i not in removed:
                    removed[i] = ("near_duplicate", root)
        Path(self.output_file).parent.mkdir(parents=True, exist_ok=True)
        with open(self.output_file, "w", encoding="utf-8") as f:
            for i in sorted(removed):
                reason, kept = removed[i]
                self.stat_update(reason)
                f.write(json.dumps({"id": str(ids[i]), "reason": reason, "duplicate_of": str(ids[kept])}) + "\n")
        self.stat_update("documents", value=len(ids))
        return
        yield  # a generator that yields nothing: this stage only writes its file


class DedupDrop(DocStep):
    """Drop the documents DedupClusters marked, with their reason."""

    step_name = "dedup"

    def __init__(self, removed_file: str, **kwargs):
        super().__init__(StepParams(), **kwargs)
        self.removed_file = removed_file
        self._removed: dict[str, str] | None = None

    def process(self, doc: Document) -> str | None:
        if self._removed is None:
            self._removed = {}
            with open(self.removed_file, encoding="utf-8") as f:
                for line in f:
                    item = json.loads(line)
                    self._removed[item["id"]] = item["reason"]
        return self._removed.get(doc.id)
