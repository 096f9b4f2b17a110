"""Fast, dependency-light text helpers shared by the steps: word split, CJK tests, stable hashes.

datatrove's rules split words with spaCy (one blank pipeline call per rule, and per line in C4): that is most of their
cost. A regex split gives the same token counts on ordinary prose (benchmarks/data_prep.py measures the agreement of
the resulting keep/drop decisions) at a fraction of the time.
"""

from __future__ import annotations

import re
import unicodedata

import xxhash

# Numbers with inner separators stay one token (spaCy keeps "3.5" and "1,000"); otherwise runs of word characters,
# and every other non-space character on its own, which is how spaCy's prefix/suffix/infix rules end up on prose.
# spaCy's tokenizer exceptions keep these abbreviations (and single initials, "E.") with their period.
_ABBREVIATIONS = (
    "vs|etc|approx|no|st|dr|mr|mrs|ms|jr|sr|prof|inc|ltd|co|corp|dept|est|fig|jan|feb|mar|apr|jun|jul|aug|sep|sept|"
    "oct|nov|dec|mon|tue|wed|thu|fri|sat|sun|ave|blvd|rd|mt|gen|gov|sen|rep|rev|vol"
)
_UNITS = "km|kg|cm|mm|m|g|mg|kb|mb|gb|tb|ml|l|lb|lbs|ft|mph|hz|ghz|mhz|k"
_WORD_RE = re.compile(
    r"(?:https?://|www\.)[^\s()<>\"']+"  # URLs stay whole
    r"|(?:[A-Za-z]\.){2,}"  # U.S., e.g.
    rf"|(?i:\b(?:{_ABBREVIATIONS})\.)|\b[A-Z]\.(?=\s)"  # Nov., Ltd., vs., E.
    r"|\d+(?:[.,:]\d+)+"  # 3.5, 1,000, 10:30
    rf"|\d+(?=(?i:{_UNITS})\b)"  # 10|km
    r"|[^\W_]+(?=n['’]t)|n['’]t|['’](?i:s|re|ve|ll|d|m)(?![^\W_])"  # do|n't, it|'s
    r"|[^\W_]+"
    r"|(?<!\S)[^\w\s]+(?!\S)"  # a chunk of punctuation only: --, @-@, ...
    r"|\.\.\.|[^\w\s]|_+"
)
_CJK_RE = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_SENTENCE_END_RE = re.compile(r"(?<=[.!?。！？])[\"'”’)\]]*\s+(?=\S)")


def split_words(text: str) -> list[str]:
    """Whitespace-language words, punctuation as separate tokens (spaCy-blank-like)."""
    return _WORD_RE.findall(text)


_cache: tuple[str, str, list[str]] | None = None


def words_of(text: str, language: str) -> list[str]:
    """Words of a document, memoised for the last document: consecutive rule steps see the same text."""
    global _cache
    if _cache is not None and _cache[1] == language and _cache[0] is text:
        return _cache[2]
    if language == "zh":
        import jieba

        words = [w for w in jieba.lcut(text, HMM=False) if w.strip()]
    else:
        words = split_words(text)
    _cache = (text, language, words)
    return words


_ABBREV_END_RE = re.compile(rf"(?:\b(?i:{_ABBREVIATIONS})|\b[A-Z]|(?:[A-Za-z]\.)+[A-Za-z])$")


def count_sentences(line: str) -> int:
    """Sentences in one line, as spaCy's sentencizer counts them: a sentence ends at . ! ? 。！？ (not at an ellipsis
    or an abbreviation's period) followed by space; the rest of the line is one more sentence."""
    line = line.strip()
    if not line:
        return 0
    count = 1
    for m in _SENTENCE_END_RE.finditer(line):
        mark = line[max(0, m.start() - 16) : m.start()]
        if mark.endswith(("...", "…")) or (mark.endswith(".") and _ABBREV_END_RE.search(mark[:-1])):
            continue
        count += 1
    return count


def cjk_count(text: str) -> int:
    return len(_CJK_RE.findall(text))


def is_cjk(char: str) -> bool:
    return bool(_CJK_RE.match(char))


def stable_hash(text: str, seed: int = 0) -> int:
    """64-bit hash that is the same in every process and on every machine (Python's hash() is salted)."""
    return xxhash.xxh64_intdigest(text.encode("utf-8"), seed=seed)


def unit_interval(text: str, seed: int) -> float:
    """Deterministic number in [0, 1) from a text: split and sampling decisions."""
    return stable_hash(text, seed) / 2**64


_PUNCT_OR_SPACE = re.compile(r"[\W_]+")


def normalise_for_exact_dedup(text: str) -> str:
    """Lower case, NFKC, punctuation and whitespace removed: copies that differ only in layout hash the same."""
    return _PUNCT_OR_SPACE.sub("", unicodedata.normalize("NFKC", text).lower())
