"""Output stage: deterministic train/validation/test split by document hash, source weights and augmentation (train
only), and the writer of the final JSONL shards (`text` first, so `CorpusArguments` reads them as they are).

The split is decided on a hash of the normalised text, before any augmentation or repetition, so the same text always
lands in the same split and nothing derived from a validation or test document can reach train.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.writers import JsonlWriter

from data_prep.steps.base import DocStep, StepParams, count_drop, register
from data_prep.text import normalise_for_exact_dedup, unit_interval
from llm_recipes.augment import augment_text

SPLITS = ("train", "validation", "test")


@dataclass
class AugmentParams(StepParams):
    copies: int = field(default=1, metadata={"help": "Augmented copies added per train document (EDA's n_aug)."})
    alpha_insert: float = field(default=0.1, metadata={"help": "EDA α_ri: share of words inserted."})
    alpha_replace: float = field(default=0.1, metadata={"help": "EDA α_sr: share of words replaced."})
    alpha_delete: float = field(default=0.1, metadata={"help": "EDA p_rd: probability of deleting each word."})
    alpha_swap: float = field(default=0.1, metadata={"help": "EDA α_rs: share of words swapped."})
    # the copies are llm_recipes.augment's: EDA with replacements from the document's own vocabulary


@register
class Augment(DocStep):
    """EDA-style augmentation (random insert / replace / delete / swap), train split only, off unless listed."""

    step_name = "augment"
    stage = "split"
    Params = AugmentParams


class SplitAndWeight(DocStep):
    """Assign each document its split; repeat or subsample train documents by source weight; augment train."""

    step_name = "split"

    def __init__(self, validation_size: float, test_size: float, weights: dict[str, float],
                 augment: AugmentParams | None, seed: int, **kwargs):
        super().__init__(StepParams(), seed=seed, **kwargs)
        self.validation_size, self.test_size = validation_size, test_size
        self.weights, self.augment = weights, augment

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        for doc in data:
            self.stat_update("docs_in")
            u = unit_interval(normalise_for_exact_dedup(doc.text), self.seed)
            split = "test" if u < self.test_size else "validation" if u < self.test_size + self.validation_size else "train"
            doc.metadata["split"] = split
            if split != "train":
                yield from self._out(doc, split)
                continue
            weight = self.weights.get(doc.metadata.get("source"), 1.0)
            copies = math.floor(weight) + (unit_interval(doc.id, self.seed + 1) < weight - math.floor(weight))
            if copies == 0:
                count_drop(self, doc.metadata.get("source"), "weight_subsampled", len(doc.text))
                continue
            for k in range(copies):
                copy = doc if k == 0 else Document(text=doc.text, id=f"{doc.id}#rep{k}", metadata=dict(doc.metadata))
                if k:
                    self.stat_update("weight_repeats")
                yield from self._out(copy, split)
                if self.augment is not None:
                    yield from self._augmented(copy)

    def _augmented(self, doc: Document):
        language = doc.metadata.get("language", "en")
        for a in range(self.augment.copies):
            rng = random.Random(f"{self.seed}:{doc.id}:{a}")  # str seeds hash with SHA-512: stable across processes
            text = augment_text(doc.text, language, self.augment, rng)
            if text.strip():
                meta = dict(doc.metadata, augmented=True)
                self.stat_update("augmented_copies")
                yield from self._out(Document(text=text, id=f"{doc.id}#aug{a}", metadata=meta), "train")

    def _out(self, doc: Document, split: str):
        self.stat_update("docs_out", f"docs_out_{split}")
        self.stat_update("chars_out", value=len(doc.text))
        yield doc


def _flat_record(self, doc: Document) -> dict:
    """`text` first, then a few flat columns (no nested metadata: Arrow would have to unify its keys)."""
    meta = doc.metadata
    return {
        "text": doc.text,
        "id": doc.id,
        "source": meta.get("source"),
        "language": meta.get("language"),
        "script": meta.get("script"),
        "augmented": bool(meta.get("augmented", False)),
    }


def split_writer(folder: str) -> JsonlWriter:
    return JsonlWriter(folder, output_filename="${split}/${rank}.jsonl", compression=None, adapter=_flat_record)
