"""Exact and MinHash near-duplicate removal across the whole corpus, sharded like datatrove's MinHash stages.

No stage holds the corpus's signatures in one process:
1. `DedupSignatures` (end of the per-document stage, every task): per document a hash of the normalised text and 14
   band hashes of a 112-value MinHash (rensa, Rust) over word 5-grams (character n-grams for Chinese). Each task writes
   one file per bucket (`exact`, `band_00` ...), sorted by (hash, source order).
2. `DedupBuckets` (`dedup_tasks` tasks, each a share of the buckets): merges the tasks' sorted files of a bucket in
   bounded chunks and writes an edge for every two documents that share a hash: the duplicate pairs.
3. `DedupClusters` (one task): connected components over the pairs only (documents without a duplicate never get
   here); in each group the document first in source order (source, file, record) is kept, so the choice is the same
   for any number of tasks and any executor. Writes, per document task, the removed ids with their reason and the id
   they duplicate.
4. `DedupDrop` (start of the output stage): drops the removed ids, counted as exact_duplicate / near_duplicate.
datatrove's own MinhashDedup* stages keep the smallest (task, index) of a cluster, which changes with the number of
tasks, and merge buckets one record at a time in Python; this is the same design keyed by source order, vectorised.
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

from llm_recipes.atomic import atomic_open, atomic_write_text

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


# A document in the dedup files: its source order (what decides which copy is kept), then where its id is stored.
NODE = np.dtype([("src", "<i8"), ("file", "<i8"), ("row", "<i8"), ("task", "<i4"), ("idx", "<i8")])
SIGNATURE = np.dtype([("hash", "<u8"), *[(n, NODE.fields[n][0]) for n in NODE.names]])
PAIR = np.dtype([(f"{side}_{n}", NODE.fields[n][0]) for side in "ab" for n in NODE.names])
EXACT = "exact"


def bucket_names(exact: bool, minhash: MinhashParams | None) -> list[str]:
    return ([EXACT] if exact else []) + [f"band_{b:02d}" for b in range(minhash.num_buckets if minhash else 0)]


def _sort(sigs: np.ndarray) -> np.ndarray:
    return sigs[np.lexsort((sigs["row"], sigs["file"], sigs["src"], sigs["hash"]))]


class DedupSignatures(PipelineStep):
    """Pass documents through; write this task's sorted signature file per bucket to <folder>/<rank>/<bucket>.npy."""

    type = "data_prep"
    name = "dedup_signatures"
    flush_every = 65_536  # documents buffered before their signatures go to disk

    def __init__(self, folder: str, exact: bool, minhash: MinhashParams | None):
        super().__init__()
        self.folder, self.exact, self.minhash = folder, exact, minhash

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        out = Path(self.folder) / f"{rank:05d}"
        out.mkdir(parents=True, exist_ok=True)
        buckets = bucket_names(self.exact, self.minhash)
        raw = {b: open(out / f"{b}.raw", "wb") for b in buckets}
        ids: list[str] = []
        buffer: list[tuple] = []  # (exact hash, band hashes, node) per document

        def flush():
            if not buffer:
                return
            nodes = np.array([b[2] for b in buffer], dtype=NODE)
            exact = np.array([b[0] for b in buffer], dtype=np.uint64)
            bands = np.array([b[1] for b in buffer], dtype=np.uint64)  # (docs, bands); (docs, 0) without MinHash
            # The bucket files in bucket_names' order: `exact` first when on, then one per band.
            columns = ([exact] if self.exact else []) + list(bands.T)
            for name, hashes in zip(buckets, columns):
                keep = hashes != 0  # 0: a text too short for one n-gram has no MinHash signature
                sigs = np.empty(int(keep.sum()), SIGNATURE)
                sigs["hash"] = hashes[keep]
                for n in NODE.names:
                    sigs[n] = nodes[n][keep]
                sigs.tofile(raw[name])
            buffer.clear()

        for doc in data:
            with self.track_time():
                src, file, row = doc.metadata["order"]
                doc.metadata["dedup_task"] = rank  # DedupDrop finds this document's verdict in removed/<rank>.jsonl
                exact = xxhash.xxh64_intdigest(normalise_for_exact_dedup(doc.text).encode()) or 1 if self.exact else 0
                bands = band_hashes(doc.text, doc.metadata.get("language", "en"), self.minhash) if self.minhash else ()
                buffer.append((exact, bands, (src, file, row, rank, len(ids))))
                ids.append(doc.id)
                if len(buffer) >= self.flush_every:
                    flush()
            yield doc
        flush()
        with self.track_time():
            for name, f in raw.items():  # one bucket of this task in memory at a time, as datatrove does
                f.close()
                path = out / f"{name}.raw"
                with atomic_open(out / f"{name}.npy", "wb") as f:  # a killed task leaves no half-written file
                    np.save(f, _sort(np.fromfile(path, dtype=SIGNATURE)))
                path.unlink()
            with atomic_open(out / "ids.npy", "wb") as f:
                np.save(f, np.array(ids, dtype=str))


class DedupBuckets(PipelineStep):
    """Each task takes every world_size-th bucket; merges all tasks' sorted files of it into duplicate pairs."""

    type = "data_prep"
    name = "dedup_buckets"

    def __init__(self, signatures_folder: str, pairs_folder: str, buckets: list[str], chunk_records: int = 1_000_000):
        super().__init__()
        self.signatures_folder, self.pairs_folder = signatures_folder, pairs_folder
        self.buckets, self.chunk_records = buckets, chunk_records

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        Path(self.pairs_folder).mkdir(parents=True, exist_ok=True)
        for bucket in self.buckets[rank::world_size]:
            with self.track_time():
                self._merge(bucket)
        return
        yield  # a generator that yields nothing: this stage only writes files

    def _merge(self, bucket: str) -> None:
        files = sorted(Path(self.signatures_folder).glob(f"*/{bucket}.npy"))
        arrays = [np.load(p, mmap_mode="r") for p in files]  # memory-mapped: only the chunk in hand is read
        pos, ends = [0] * len(arrays), [len(a) for a in arrays]
        per_file = max(1, self.chunk_records // max(1, len(arrays)))
        carry = None  # the last document of the previous chunk: its hash group may go on in this one
        with atomic_open(Path(self.pairs_folder) / f"{bucket}.pairs", "wb") as f:
            while any(p < e for p, e in zip(pos, ends)):
                windows = [a[p : min(p + per_file, e)] for a, p, e in zip(arrays, pos, ends)]
                # Every group with a hash below `upper` lies wholly inside the windows (the files are sorted); the
                # group at `upper` may go on, and the carry links its two parts.
                cut_at = [w["hash"][-1] for w, p, e in zip(windows, pos, ends) if p + len(w) < e]
                upper = min(cut_at) if cut_at else None
                parts = []
                for i, w in enumerate(windows):
                    n = len(w) if upper is None else int(np.searchsorted(w["hash"], upper, side="right"))
                    parts.append(np.array(w[:n]))
                    pos[i] += n
                chunk = _sort(np.concatenate(parts))
                self.stat_update("records", value=len(chunk))
                if len(chunk):
                    pairs = _pairs(chunk, carry)
                    pairs.tofile(f)
                    self.stat_update("pairs", value=len(pairs))
                    carry = chunk[-1]


def _pairs(chunk: np.ndarray, carry) -> np.ndarray:
    """An edge from the first document of each hash group to each other member (plus the carry's link)."""
    starts = np.ones(len(chunk), bool)
    starts[1:] = chunk["hash"][1:] != chunk["hash"][:-1]
    first = np.maximum.accumulate(np.where(starts, np.arange(len(chunk)), 0))
    a, b = chunk[first[~starts]], chunk[~starts]
    if carry is not None and chunk["hash"][0] == carry["hash"]:
        a, b = np.concatenate([np.array([carry]), a]), np.concatenate([chunk[:1], b])
    pairs = np.empty(len(a), PAIR)
    for n in NODE.names:
        pairs[f"a_{n}"], pairs[f"b_{n}"] = a[n], b[n]
    return pairs


def _components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """For each of n nodes, the smallest node of its connected component (nodes are numbered in source order)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(a), np.int8), (a, b)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    first = np.full(labels.max() + 1 if n else 0, n, dtype=np.int64)
    np.minimum.at(first, labels, np.arange(n))
    return first[labels]


class DedupClusters(PipelineStep):
    """One task: group the duplicate pairs; write removed/<task>.jsonl (id, reason, duplicate_of) per document task."""

    type = "data_prep"
    name = "dedup_clusters"

    def __init__(self, signatures_folder: str, pairs_folder: str, removed_folder: str):
        super().__init__()
        self.signatures_folder, self.pairs_folder, self.removed_folder = signatures_folder, pairs_folder, removed_folder

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        files = sorted(Path(self.pairs_folder).glob("*.pairs"))
        pairs = [np.fromfile(p, dtype=PAIR) for p in files]
        is_exact = np.concatenate([np.full(len(p), f.stem == EXACT) for p, f in zip(pairs, files)] or [np.zeros(0, bool)])
        pairs = np.concatenate(pairs) if pairs else np.zeros(0, PAIR)
        ends = np.empty(2 * len(pairs), NODE)
        for n in NODE.names:
            ends[n] = np.concatenate([pairs[f"a_{n}"], pairs[f"b_{n}"]])
        nodes, index = np.unique(ends, return_inverse=True)  # sorted by source order: node 0 comes first
        a, b = index[: len(pairs)], index[len(pairs) :]
        keep_of = _components(len(nodes), a, b)
        exact_of = _components(len(nodes), a[is_exact], b[is_exact])
        out = Path(self.removed_folder)
        out.mkdir(parents=True, exist_ok=True)
        ids = {}  # task -> its memory-mapped id table
        lines: dict[int, list[str]] = {}
        for i in np.flatnonzero((keep_of != np.arange(len(nodes))) | (exact_of != np.arange(len(nodes)))):
            reason, kept = ("exact_duplicate", exact_of[i]) if exact_of[i] != i else ("near_duplicate", keep_of[i])
            self.stat_update(reason)
            record = {"id": self._id(ids, nodes[i]), "reason": reason, "duplicate_of": self._id(ids, nodes[kept]),
                      "order": [int(nodes[i][k]) for k in ("src", "file", "row")]}
            lines.setdefault(int(nodes[i]["task"]), []).append(json.dumps(record, ensure_ascii=False))
        for task, task_lines in lines.items():
            atomic_write_text(out / f"{task:05d}.jsonl", "\n".join(task_lines) + "\n")
        self.stat_update("documents_with_duplicates", value=len(nodes))
        return
        yield  # a generator that yields nothing: this stage only writes files

    def _id(self, ids: dict, node) -> str:
        task = int(node["task"])
        if task not in ids:
            ids[task] = np.load(Path(self.signatures_folder) / f"{task:05d}" / "ids.npy", mmap_mode="r")
        return str(ids[task][int(node["idx"])])


class DedupDrop(DocStep):
    """Drop the documents DedupClusters marked, with their reason."""

    step_name = "dedup"

    def __init__(self, removed_folder: str, **kwargs):
        super().__init__(StepParams(), **kwargs)
        self.removed_folder = removed_folder
        self._removed: dict[int, dict[str, str]] = {}

    def process(self, doc: Document) -> str | None:
        task = doc.metadata["dedup_task"]
        if task not in self._removed:  # only the document tasks this output task reads: never the whole corpus
            path = Path(self.removed_folder) / f"{task:05d}.jsonl"
            self._removed[task] = {}
            if path.exists():
                with open(path, encoding="utf-8") as f:
                    for line in f:
                        item = json.loads(line)
                        self._removed[task][item["id"]] = item["reason"]
        return self._removed[task].get(doc.id)
