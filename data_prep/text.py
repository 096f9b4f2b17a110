"""Fast, dependency-light text helpers shared by the steps: word split, CJK tests, stable hashes.

datatrove's rules split words with spaCy (one blank pipeline call per rule, and per line in C4): that is most of their
cost. A regex split gives the same token counts on ordinary prose (benchmarks/data_prep_bench.py measures the agreement of
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
    "vs|approx|st|dr|mr|mrs|ms|jr|sr|prof|inc|ltd|co|corp|dept|est|fig|jan|feb|mar|apr|jun|jul|aug|sep|sept|"
    "oct|nov|dec|mon|tue|wed|thu|fri|sat|sun|ave|blvd|rd|mt|gen|gov|sen|rep|rev|vol|bros"
)
_UNITS = "km|kg|cm|mm|m|g|mg|kb|mb|gb|tb|ml|l|lb|lbs|ft|mph|hz|ghz|mhz|k"
_PREFIX = set("\"'“‘([{<¿¡«*§#$£€¥")
_SUFFIX = set("\"'”’)]}>»,.;:!?%*")
_CONTRACTION_RE = re.compile(r"(?i)(?:n['’]t|['’](?:s|re|ve|ll|d|m))$")
_UNIT_RE = re.compile(rf"(?<=\d)(?i:{_UNITS})$")
_ABBREV_RE = re.compile(rf"(?i:{_ABBREVIATIONS})|[A-Za-z]|(?:[A-Za-z]\.)+[A-Za-z]")
# spaCy's infixes: hyphens and commas between letters, :<>=/ before a letter, arithmetic between digits.
_INFIX_RE = re.compile(
    r"(?<=[^\W\d_])(?:--|-|–|—|,)(?=[^\W\d_])|(?<=\d)-(?=\w)|(?<=[\w])[:<>=/](?=[^\W\d_])|(?<=\d)[+*^](?=\d)|…"
)
_URL_RE = re.compile(r"(?i)^(?:https?://|www\.)")


_EXCEPTIONS = {"cannot": ["can", "not"], "Cannot": ["Can", "not"], "and/or": ["and/or"]}
_WHOLE_RE = re.compile(r"(?i)n['’]t|['’](?:s|re|ve|ll|d|m)|\.{2,}")


def _split_chunk(chunk: str) -> list[str]:
    if chunk in _EXCEPTIONS:
        return _EXCEPTIONS[chunk]
    if _WHOLE_RE.fullmatch(chunk):
        return [chunk]
    head: list[str] = []
    while chunk:
        if chunk.startswith("..."):
            head.append("...")
            chunk = chunk[3:]
        elif chunk[0] in _PREFIX:
            head.append(chunk[0])
            chunk = chunk[1:]
        else:
            break
    tail: list[str] = []
    while chunk:
        m = _CONTRACTION_RE.search(chunk) if len(chunk) > 3 or chunk[0] not in "'’" else None
        if chunk.endswith("...") and len(chunk) > 3:
            tail.append("...")
            chunk = chunk[:-3]
        elif m and m.start() > 0:
            tail.append(m.group(0))
            chunk = chunk[: m.start()]
        elif chunk[-1] in _SUFFIX and len(chunk) > 1:
            if chunk[-1] == "." and _ABBREV_RE.fullmatch(chunk[:-1]):
                break
            tail.append(chunk[-1])
            chunk = chunk[:-1]
        elif (u := _UNIT_RE.search(chunk)) and u.start() > 0:
            tail.append(u.group(0))
            chunk = chunk[: u.start()]
        else:
            break
    core: list[str] = []
    if _URL_RE.match(chunk):
        core.append(chunk)
    elif chunk:
        pos = 0
        for m in _INFIX_RE.finditer(chunk):
            if m.start() > pos:
                core.append(chunk[pos : m.start()])
            core.append(m.group(0))
            pos = m.end()
        if pos < len(chunk):
            core.append(chunk[pos:])
    return head + core + tail[::-1]


def split_words(text: str) -> list[str]:
    """Words as spaCy's blank English tokenizer finds them, closely: whitespace chunks, then prefix / suffix
    punctuation, contractions and units split off, then a few infix rules (a port of its main rules, not all)."""
    out: list[str] = []
    for chunk in text.split():
        if chunk.isalpha() or chunk.isdigit():
            out.append(chunk)
        else:
            out.extend(_split_chunk(chunk))
    return out


_CJK_RE = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_SENTENCE_END_RE = re.compile(r"(?<=[.!?。！？])[\"'”’)\]]*\s+(?=\S)")


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
