"""Fast, dependency-light text helpers shared by the steps: word split, CJK tests, stable hashes.

datatrove's rules split words with spaCy (one blank-pipeline call per rule, and one per line in C4, each building a Doc):
that is most of their cost. Here spaCy's own tokenizer rules are applied by a small Python loop, once per document,
which gives the same words (benchmarks/data_prep_bench.py measures the agreement of the keep/drop decisions).
"""

from __future__ import annotations

import logging
import re
import sys
import unicodedata

import xxhash



_CJK_RE = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


class _SpacyRules:
    """spaCy's English tokenizer rules (prefix, suffix and infix regexes, special cases, URL match), applied by a
    plain-Python port of its affix loop. No Doc, no Vocab lookups, no pipeline: the same tokens, several times faster
    than datatrove's per-rule spaCy call. spaCy's blank English pipeline ships in the spaCy wheel (no download)."""

    def __init__(self):
        # spaCy's thinc imports torch when it can (2 of spaCy's 3.4 s of import, in every worker): none of it is used here
        hide_torch = "torch" not in sys.modules
        if hide_torch:
            sys.modules["torch"] = None  # an import of it fails fast, and thinc carries on without
        try:
            import spacy
        finally:
            if hide_torch:
                del sys.modules["torch"]

        tok = spacy.blank("en").tokenizer
        self.prefix = tok.prefix_search
        self.suffix = tok.suffix_search
        self.infixes = tok.infix_finditer
        self.url = tok.url_match
        self.token_match = tok.token_match
        self.specials = {k: [next(iter(t.values())) for t in v] for k, v in tok.rules.items()}

    def chunk(self, string: str) -> list[str]:
        specials = self.specials
        if string in specials:
            return specials[string]
        prefixes: list[str] = []
        suffixes: list[str] = []
        while string and string not in specials:
            last = string
            pre = self.prefix(string)
            pre_len = pre.end() - pre.start() if pre else 0
            if pre_len and string[pre_len:] in specials:
                prefixes.append(string[:pre_len])
                string = string[pre_len:]
                break
            suf = self.suffix(string[pre_len:])
            suf_len = suf.end() - suf.start() if suf else 0
            if suf_len and string[:-suf_len] in specials:
                suffixes.append(string[-suf_len:])
                string = string[:-suf_len]
                break
            if pre_len and suf_len and pre_len + suf_len <= len(string):
                prefixes.append(string[:pre_len])
                suffixes.append(string[-suf_len:])
                string = string[pre_len:-suf_len]
            elif pre_len:
                prefixes.append(string[:pre_len])
                string = string[pre_len:]
            elif suf_len:
                suffixes.append(string[-suf_len:])
                string = string[:-suf_len]
            if string == last:
                break
        tokens = prefixes
        if string:
            if string in specials:
                tokens += specials[string]
            elif (self.token_match and self.token_match(string)) or (self.url and self.url(string)):
                tokens.append(string)
            else:
                start = 0
                for m in self.infixes(string):
                    if m.start() == 0 and m.end() == 0:
                        continue
                    if m.start() > start:
                        tokens.append(string[start : m.start()])
                    if m.end() > m.start():
                        tokens.append(string[m.start() : m.end()])
                    start = m.end()
                if start < len(string):
                    tokens.append(string[start:])
        tokens += reversed(suffixes)
        return tokens


_rules: _SpacyRules | None = None


def split_words(text: str) -> list[str]:
    """Words as spaCy's blank English tokenizer finds them (whitespace chunks, then its affix rules)."""
    global _rules
    if _rules is None:
        _rules = _SpacyRules()
    out: list[str] = []
    chunk = _rules.chunk
    specials = _rules.specials
    cache = _chunk_cache
    if len(cache) > 50_000:  # bounded memory on a long run (~10 MB); chunks like "the," and "it." repeat all the time
        cache.clear()
    for piece in text.split():
        if piece.isalpha() and piece not in specials:
            out.append(piece)
        else:
            tokens = cache.get(piece)
            if tokens is None:
                tokens = cache[piece] = chunk(piece)
            out.extend(tokens)
    return out


_chunk_cache: dict[str, list[str]] = {}


_cache: tuple[str, str, list[str]] | None = None


def _jieba():
    """jieba, its dictionary loaded without its four lines of progress on stderr."""
    import jieba

    if not jieba.dt.initialized:
        jieba.setLogLevel(logging.WARNING)
        jieba.initialize()
    return jieba


def words_of(text: str, language: str) -> list[str]:
    """Words of a document, memoised for the last document: consecutive rule steps see the same text."""
    global _cache
    if _cache is not None and _cache[1] == language and _cache[0] is text:
        return _cache[2]
    if language == "zh":
        words = [w for w in _jieba().lcut(text, HMM=False) if w.strip()]
    else:
        words = split_words(text)
    _cache = (text, language, words)
    return words


_sentence_ends: frozenset[str] | None = None


def _is_punct(token: str) -> bool:  # spaCy's lexeme attribute is_punct
    return all(unicodedata.category(c).startswith("P") for c in token)


def count_sentences(line: str) -> int:
    """Sentences in one line as spaCy's rule-based Sentencizer (datatrove's sentence split) counts them: a sentence
    ends after a token in its punctuation list, at the next token that is not punctuation."""
    global _sentence_ends
    if _sentence_ends is None:
        from spacy.pipeline import Sentencizer

        _sentence_ends = frozenset(Sentencizer.default_punct_chars)
    tokens = split_words(line)
    if not tokens:
        return 0
    count, seen_end = 1, False
    for token in tokens:
        if token in _sentence_ends:
            seen_end = True
        elif seen_end and not _is_punct(token):
            count += 1
            seen_end = False
    return count


def cjk_count(text: str) -> int:
    return len(_CJK_RE.findall(text))


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
