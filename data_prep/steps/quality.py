"""Quality rules: Gopher quality and repetition, C4 and FineWeb for English (published defaults), and a Chinese variant.

The English rules are datatrove's (same thresholds, same order, same drop reasons), with words split once per document
by spaCy's own tokenizer rules (data_prep.text) instead of a spaCy Doc per rule and per line; tests/data_prep/test_rules.py
and benchmarks/data_prep_bench.py check that the decisions agree.
Gopher's repetition rules are character fractions and carry over to Chinese once words come from jieba (what
FineWeb-2 does with language-specific word splitters). The length, punctuation and line rules that assume spaces and
ASCII punctuation are replaced for Chinese by `zh_quality`, which counts characters.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from datatrove.data import Document
from datatrove.utils.text import PUNCTUATION_SET, TERMINAL_PUNCTUATION

from data_prep.steps.base import DocStep, StepParams, register
from data_prep.text import cjk_count, count_sentences, words_of


def _english() -> list[str]:
    return ["en"]


def _min_lines(rules: str):
    return field(
        default=1,
        metadata={"help": f"Per document: the share-of-lines rules ({rules}) judge only documents with at least this "
                  "many lines. On a one-line document (an article or paragraph per record, as many dumps store text) "
                  "a share of lines is that one line's verdict; 1 = the published rule."},
    )


# --- Gopher quality (Rae et al. 2021, arXiv:2112.11446, Appendix A; datatrove GopherQualityFilter defaults) -----------


@dataclass
class GopherQualityParams(StepParams):
    languages: list[str] | None = field(default_factory=_english, metadata={"help": "Languages the rule applies to."})
    min_doc_words: int | None = field(default=50, metadata={"help": "Gopher: at least 50 non-symbol words."})
    max_doc_words: int | None = field(default=100000, metadata={"help": "Gopher: at most 100,000 words."})
    min_avg_word_length: float | None = field(default=3, metadata={"help": "Gopher: mean word length >= 3."})
    max_avg_word_length: float | None = field(default=10, metadata={"help": "Gopher: mean word length <= 10."})
    max_symbol_word_ratio: float | None = field(default=0.1, metadata={"help": "Gopher: # or ... per word <= 0.1."})
    max_bullet_lines_ratio: float | None = field(
        default=0.9, metadata={"help": "Gopher, per document: <= 90% lines start with a bullet."})
    max_ellipsis_lines_ratio: float | None = field(
        default=0.3, metadata={"help": "Gopher, per document: <= 30% lines end with ...."})
    max_non_alpha_words_ratio: float | None = field(
        default=0.8, metadata={"help": "Gopher: >= 80% of words contain a letter (datatrove's name for it)."}
    )
    alpha_ratio_counts_punctuation: bool = field(
        default=True,
        metadata={"help": "True (datatrove, FineWeb): commas, brackets and full stops count as words in the 80% rule, "
                  "so clean prose rich in them fails it (about 1 encyclopedia paragraph in 10). False: only words "
                  "with a non-punctuation character count, as the Gopher paper words it."},
    )
    min_lines: int = _min_lines("bullet and ellipsis lines")

    min_stop_words: int | None = field(default=2, metadata={"help": "Gopher: at least 2 of the stop words."})
    stop_words: list[str] = field(
        default_factory=lambda: ["the", "be", "to", "of", "and", "that", "have", "with"],
        metadata={"help": "Gopher's English stop words."},
    )


@register
class GopherQuality(DocStep):
    """Gopher quality rules: word counts, word length, symbols, bullets, ellipses, alphabetic words, stop words."""

    step_name = "gopher_quality"
    Params = GopherQualityParams

    def process(self, doc: Document) -> str | None:
        p, text = self.params, doc.text
        words = words_of(text, doc.metadata.get("language", "en"))
        n_words = len(words)
        punct = PUNCTUATION_SET.issuperset  # a word of punctuation only is a "symbol"
        non_symbol = [w for w in words if not punct(w)]
        if p.min_doc_words and len(non_symbol) < p.min_doc_words:
            return "gopher_short_doc"
        if p.max_doc_words and len(non_symbol) > p.max_doc_words:
            return "gopher_long_doc"
        if not non_symbol:
            return "gopher_short_doc"
        avg = sum(map(len, non_symbol)) / len(non_symbol)
        if p.min_avg_word_length and avg < p.min_avg_word_length:
            return "gopher_below_avg_threshold"
        if p.max_avg_word_length and avg > p.max_avg_word_length:
            return "gopher_above_avg_threshold"
        if p.max_symbol_word_ratio and text.count("#") / n_words > p.max_symbol_word_ratio:
            return "gopher_too_many_hashes"
        if p.max_symbol_word_ratio and (text.count("...") + text.count("…")) / n_words > p.max_symbol_word_ratio:
            return "gopher_too_many_ellipsis"
        lines = text.splitlines()
        judge_lines = len(lines) >= p.min_lines
        if judge_lines and p.max_bullet_lines_ratio and sum(
            s.lstrip().startswith(("•", "-")) for s in lines
        ) / len(lines) > p.max_bullet_lines_ratio:
            return "gopher_too_many_bullets"
        if judge_lines and p.max_ellipsis_lines_ratio and sum(
            s.rstrip().endswith(("...", "…")) for s in lines
        ) / len(lines) > p.max_ellipsis_lines_ratio:
            return "gopher_too_many_end_ellipsis"
        counted = words if p.alpha_ratio_counts_punctuation else non_symbol
        if p.max_non_alpha_words_ratio and sum(
            w.isalpha() or _HAS_ALPHA(w) is not None for w in counted
        ) / len(counted) < p.max_non_alpha_words_ratio:
            return "gopher_below_alpha_threshold"
        if p.min_stop_words and len(set(p.stop_words).intersection(words)) < p.min_stop_words:
            return "gopher_enough_stop_words"
        return None


# --- Gopher repetition (arXiv:2112.11446, Table A1; datatrove GopherRepetitionFilter defaults) --------------------------


@dataclass
class GopherRepetitionParams(StepParams):
    dup_line_frac: float | None = field(
        default=0.3, metadata={"help": "Gopher, per document: duplicate line fraction <= 0.30."})
    dup_para_frac: float | None = field(
        default=0.3, metadata={"help": "Gopher, per document: duplicate paragraph fraction <= 0.30."})
    dup_line_char_frac: float | None = field(
        default=0.2, metadata={"help": "Gopher, per document: duplicate line chars <= 0.20."})
    dup_para_char_frac: float | None = field(
        default=0.2, metadata={"help": "Gopher, per document: duplicate paragraph chars <= 0.20."})
    top_n_grams: list[list[float]] = field(
        default_factory=lambda: [[2, 0.2], [3, 0.18], [4, 0.16]],
        metadata={"help": "Gopher: [n, max char fraction of the most frequent word n-gram]."},
    )
    dup_n_grams: list[list[float]] = field(
        default_factory=lambda: [[5, 0.15], [6, 0.14], [7, 0.13], [8, 0.12], [9, 0.11], [10, 0.10]],
        metadata={"help": "Gopher: [n, max char fraction inside duplicated word n-grams]."},
    )


def _find_duplicates(items: list[str]) -> tuple[int, int]:
    seen: set[str] = set()
    dup_items = dup_chars = 0
    for item in items:
        if item in seen:
            dup_chars += len(item)
            dup_items += 1
        else:
            seen.add(item)
    return dup_items, dup_chars


def _top_ngram_chars(words: list[str], n: int, joiner: int = 1, min_count: int = 1) -> int:
    counts = Counter(zip(*(words[i:] for i in range(n))))
    if not counts:
        return 0
    gram, count = counts.most_common(1)[0]
    if count < min_count:
        return 0
    return (sum(map(len, gram)) + joiner * (n - 1)) * count  # datatrove joins the n-gram with spaces


def _all_duplicate_chars(words: list[str], n: int) -> int:
    seen: set[tuple[str, ...]] = set()
    repeated, idx, end = 0, 0, len(words) - n + 1
    grams = list(zip(*(words[i:] for i in range(n))))  # built in C, much faster than slicing per position
    while idx < end:
        gram = grams[idx]
        if gram in seen:
            repeated += sum(map(len, gram))
            idx += n
        else:
            seen.add(gram)
            idx += 1
    return repeated


_HAS_ALPHA = re.compile(r"[^\W\d_]").search  # str.isalpha on any character, in one C call
_PARAGRAPH_RE = re.compile(r"\n{2,}")
_PUNCT_ONLY = re.compile(r"[\W_]+")
_LINES_RE = re.compile(r"\n+")


@register
class GopherRepetition(DocStep):
    """Gopher repetition rules: duplicate lines/paragraphs and repeated word n-grams (jieba words for Chinese)."""

    step_name = "gopher_repetition"
    Params = GopherRepetitionParams

    def process(self, doc: Document) -> str | None:
        p, text = self.params, doc.text
        if not text:
            return "empty"
        paragraphs = _PARAGRAPH_RE.split(text.strip())
        dup, chars = _find_duplicates(paragraphs)
        if p.dup_para_frac and dup / len(paragraphs) > p.dup_para_frac:
            return "dup_para_frac"
        if p.dup_para_char_frac and chars / len(text) > p.dup_para_char_frac:
            return "dup_para_char_frac"
        lines = _LINES_RE.split(text)
        dup, chars = _find_duplicates(lines)
        if p.dup_line_frac and dup / len(lines) > p.dup_line_frac:
            return "dup_line_frac"
        if p.dup_line_char_frac and chars / len(text) > p.dup_line_char_frac:
            return "dup_line_char_frac"
        language = doc.metadata.get("language", "en")
        words = words_of(text, language)
        # Chinese is written without spaces, and its short genres (poems) are a few dozen characters: count n-grams
        # without the joining spaces and only when one really repeats, else one unique 4-gram is 20% of a quatrain.
        zh = language == "zh"
        if zh:
            words = [w for w in words if not _PUNCT_ONLY.fullmatch(w)]
        for n, frac in p.top_n_grams:
            if _top_ngram_chars(words, int(n), joiner=0 if zh else 1, min_count=2 if zh else 1) / len(text) > frac:
                return f"top_{int(n)}_gram"
        for n, frac in p.dup_n_grams:
            if _all_duplicate_chars(words, int(n)) / len(text) > frac:
                return f"duplicated_{int(n)}_n_grams"
        return None


# --- C4 (Raffel et al. 2020, §2.2; datatrove C4QualityFilter defaults; the bad-words list needs a download: not here)


@dataclass
class C4Params(StepParams):
    languages: list[str] | None = field(default_factory=_english, metadata={"help": "Languages the rule applies to."})
    remove_citations: bool = field(default=True, metadata={"help": "C4: strip [1], [edit], [citation needed]."})
    filter_no_terminal_punct: bool = field(
        default=True,
        metadata={"help": "C4, per line: remove lines not ending in . ! ? \" '. A one-line document loses its only "
                  "line and then fails min_num_sentences: FineWeb runs C4's filter with this off."})
    min_num_sentences: int = field(
        default=5, metadata={"help": "C4, per document: drop pages with < 5 sentences in their kept lines (-1 = off)."})
    min_words_per_line: int = field(default=3, metadata={"help": "C4, per line: remove lines with < 3 words (-1 = off)."})
    max_word_length: int = field(
        default=1000, metadata={"help": "C4 code, per line: remove lines with a word > 1000 chars."})
    filter_lorem_ipsum: bool = field(
        default=True, metadata={"help": "C4, per document: drop pages containing 'lorem ipsum'."})
    filter_javascript: bool = field(default=True, metadata={"help": "C4, per line: remove lines mentioning javascript."})
    filter_curly_bracket: bool = field(default=True, metadata={"help": "C4, per document: drop pages containing '{'."})
    filter_policy: bool = field(default=True, metadata={"help": "C4 code, per line: remove cookie / terms-of-use lines."})


_CITATION_RE = re.compile(r"\[\d*]|\[edit]|\[citation needed]")
_C4_END = (".", "?", "!", '"', "'")
_POLICY = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")


@register
class C4Quality(DocStep):
    """C4 rules: keep lines ending in terminal punctuation with >= 3 words; drop pages with < 5 sentences, '{', lorem."""

    step_name = "c4_quality"
    Params = C4Params

    def process(self, doc: Document) -> str | None:
        p = self.params
        kept, sentences = [], 0
        for line in doc.text.splitlines():
            line = line.strip()
            words = line.split()
            if p.max_word_length != -1 and any(len(w) > p.max_word_length for w in words):
                continue
            if p.remove_citations:
                line = _CITATION_RE.sub("", line)
            if p.filter_no_terminal_punct and (not line.endswith(_C4_END) or line.endswith("...")):
                continue
            if len(words) < p.min_words_per_line:
                continue
            lower = line.lower()
            if p.filter_lorem_ipsum and "lorem ipsum" in lower:
                return "lorem_ipsum"
            if p.filter_javascript and "javascript" in lower:
                continue
            if p.filter_curly_bracket and "{" in line:
                return "curly_bracket"
            if p.filter_policy and any(s in lower for s in _POLICY):
                continue
            if p.min_num_sentences != -1:
                sentences += count_sentences(line)
            kept.append(line)
        if sentences < p.min_num_sentences:
            return "too_few_sentences"
        doc.text = "\n".join(kept).strip()
        return None


# --- FineWeb (Penedo et al. 2024, arXiv:2406.17557 §3.3; datatrove FineWebQualityFilter defaults) ----------------------


@dataclass
class FineWebParams(StepParams):
    languages: list[str] | None = field(default_factory=_english, metadata={"help": "Languages the rule applies to."})
    line_punct_thr: float = field(
        default=0.12, metadata={"help": "FineWeb, per document: >= 12% of lines end in punctuation."})
    line_punct_exclude_zero: bool = field(
        default=False,
        metadata={"help": "FineWeb, per document: skip line_punct_thr when no line ends in punctuation."})
    short_line_thr: float = field(default=0.67, metadata={"help": "FineWeb, per document: <= 67% of lines are short."})
    short_line_length: int = field(
        default=30, metadata={"help": "FineWeb, per document (short_line_thr): a short line has <= 30 characters."})
    char_duplicates_ratio: float = field(
        default=0.01, metadata={"help": "FineWeb, per document: <= 1% chars in duplicate lines."})
    new_line_ratio: float = field(
        default=0.3, metadata={"help": "FineWeb, per document: newlines per word <= 0.3 (list pages)."})
    min_lines: int = _min_lines("line_punct_thr, short_line_thr")


_TERMINAL = tuple(TERMINAL_PUNCTUATION)


@register
class FineWebQuality(DocStep):
    """FineWeb rules: share of lines ending in punctuation, short lines, duplicated line characters, list-like pages."""

    step_name = "fineweb_quality"
    Params = FineWebParams

    def process(self, doc: Document) -> str | None:
        p = self.params
        lines = [line for line in doc.text.split("\n") if line.strip()]
        if not lines:
            return "empty"
        if len(lines) >= p.min_lines:
            ratio = sum(line.endswith(_TERMINAL) for line in lines) / len(lines)
            if ratio < p.line_punct_thr and not (ratio == 0 and p.line_punct_exclude_zero):
                return "line_punct_ratio"
            if sum(len(line) <= p.short_line_length for line in lines) / len(lines) > p.short_line_thr:
                return "short_line_ratio"
        if _find_duplicates(lines)[1] / len(doc.text.replace("\n", "")) > p.char_duplicates_ratio:
            return "char_dup_ratio"
        words = words_of(doc.text, doc.metadata.get("language", "en"))
        if doc.text.count("\n") / max(len(words), 1) > p.new_line_ratio:
            return "list_ratio"
        return None


# --- Chinese --------------------------------------------------------------------------------------------------------

_ZH_END = ("。", "！", "？", "…", "；", "”", "」", "』", "）", ".", "!", "?", '"')


@dataclass
class ChineseQualityParams(StepParams):
    languages: list[str] | None = field(default_factory=lambda: ["zh"], metadata={"help": "Languages it applies to."})
    min_chars: int = field(
        default=200,
        metadata={"help": "Per document: minimum characters, all of them counted (ChineseWebText, arXiv:2311.01149, "
                  "drops texts shorter than 200: len(text) in its code). Short genres such as poems need a lower "
                  "value; min_cjk_ratio keeps mostly non-Chinese text out."},
    )
    max_chars: int = field(default=100000, metadata={"help": "Maximum characters (Gopher's max words, in characters)."})
    min_cjk_ratio: float = field(
        default=0.3,
        metadata={"help": "Minimum share of CJK characters among non-space characters (ChineseWebText's Chinese "
                  "character proportion rule)."},
    )
    line_punct_thr: float = field(
        default=0.12,
        metadata={"help": "FineWeb's rule with Chinese end punctuation 。！？…；”」, per document: min share of lines."}
    )
    short_line_thr: float = field(default=0.67, metadata={"help": "FineWeb, per document: max share of short lines."})
    short_line_chars: int = field(
        default=10,
        metadata={"help": "Per document (short_line_thr): a short Chinese line (30 Latin characters ≈ 10 CJK ones)."}
    )
    char_duplicates_ratio: float = field(
        default=0.01, metadata={"help": "FineWeb, per document: max share of chars in repeated lines."})
    max_bullet_lines_ratio: float = field(
        default=0.9, metadata={"help": "Gopher, per document: max share of bullet lines."})
    max_ellipsis_lines_ratio: float = field(
        default=0.3, metadata={"help": "Gopher, per document: max share of lines ending in …."})
    min_lines: int = _min_lines("line punctuation, short, bullet and ellipsis lines")


@register
class ChineseQuality(DocStep):
    """Chinese quality rules that count characters and use Chinese end punctuation (ChineseWebText / FineWeb style)."""

    step_name = "zh_quality"
    Params = ChineseQualityParams

    def process(self, doc: Document) -> str | None:
        p, text = self.params, doc.text
        if len(text) < p.min_chars:
            return "zh_short_doc"
        cjk = cjk_count(text)
        if len(text) > p.max_chars:
            return "zh_long_doc"
        non_space = sum(not c.isspace() for c in text)
        if cjk / non_space < p.min_cjk_ratio:
            return "zh_low_cjk_ratio"
        lines = [line.strip() for line in text.split("\n") if line.strip()]
        judge = len(lines) >= p.min_lines  # the share-of-lines rules
        if judge and sum(line.endswith(_ZH_END) for line in lines) / len(lines) < p.line_punct_thr:
            return "zh_line_punct_ratio"
        if judge and sum(cjk_count(line) <= p.short_line_chars for line in lines) / len(lines) > p.short_line_thr:
            return "zh_short_line_ratio"
        if _find_duplicates(lines)[1] / non_space > p.char_duplicates_ratio:
            return "zh_char_dup_ratio"
        if judge and sum(line.startswith(("•", "-", "·")) for line in lines) / len(lines) > p.max_bullet_lines_ratio:
            return "zh_too_many_bullets"
        if judge and sum(line.endswith(("...", "…", "……")) for line in lines) / len(lines) > p.max_ellipsis_lines_ratio:
            return "zh_too_many_end_ellipsis"
        return None
