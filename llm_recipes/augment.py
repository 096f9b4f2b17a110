"""EDA text augmentation (Wei & Zou 2019, arXiv:1901.11196): random word insert / replace / swap / delete. The
data_prep `augment` step and recipes/classify.py both call it.

EDA draws replacements from WordNet synonyms; offline and for Chinese we draw them from the text's own vocabulary
instead, which keeps the noise in-domain. Chinese is cut into words with jieba, other languages at spaces.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass
class EdaRates:
    """How much one copy changes; data_prep's AugmentParams carries the same four fields (with their CLI help)."""

    alpha_insert: float = 0.1  # share of words inserted (EDA's α_ri)
    alpha_replace: float = 0.1  # share of words replaced (α_sr)
    alpha_delete: float = 0.1  # probability of deleting each word (p_rd)
    alpha_swap: float = 0.1  # share of words swapped (α_rs)


def eda(words: list[str], p: EdaRates, rng: random.Random) -> list[str]:
    words = list(words)
    n = len(words)
    if n < 2:
        return words
    vocab = sorted(set(words))
    for _ in range(max(1, round(p.alpha_replace * n)) if p.alpha_replace else 0):
        words[rng.randrange(len(words))] = rng.choice(vocab)
    for _ in range(max(1, round(p.alpha_insert * n)) if p.alpha_insert else 0):
        words.insert(rng.randrange(len(words) + 1), rng.choice(vocab))
    for _ in range(max(1, round(p.alpha_swap * n)) if p.alpha_swap else 0):
        i, j = rng.randrange(len(words)), rng.randrange(len(words))
        words[i], words[j] = words[j], words[i]
    if p.alpha_delete:
        kept = [w for w in words if rng.random() >= p.alpha_delete]
        words = kept or [rng.choice(words)]
    return words


def augment_text(text: str, language: str | None, p: EdaRates, rng: random.Random) -> str:
    """One EDA copy of `text`: Chinese by jieba words, other languages by spaces."""
    if language == "zh":
        import jieba

        words = [w for w in jieba.lcut(text, HMM=False) if w.strip()]
    else:
        words = text.split(" ")
    return ("" if language == "zh" else " ").join(eda(words, p, rng))
