"""Extraction and cleaning: HTML main text, unicode repair, control characters, whitespace, boilerplate lines, OpenCC."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

from datatrove.data import Document

from data_prep.steps.base import DocStep, StepParams, register


@dataclass
class ExtractHtmlParams(StepParams):
    include_comments: bool = field(default=False, metadata={"help": "Keep the page's comment section (trafilatura)."})
    include_tables: bool = field(default=True, metadata={"help": "Keep text inside <table> (trafilatura default)."})
    favor_precision: bool = field(default=False, metadata={"help": "trafilatura: less boilerplate, may lose text."})
    favor_recall: bool = field(default=False, metadata={"help": "trafilatura: more text, may keep boilerplate."})


@register
class ExtractHtml(DocStep):
    """HTML pages (sources with format: html) to their main text with trafilatura; other documents pass through."""

    step_name = "extract_html"
    Params = ExtractHtmlParams

    def applies_to(self, doc: Document) -> bool:
        return doc.metadata.get("format") == "html" and super().applies_to(doc)

    def process(self, doc: Document) -> str | None:
        import trafilatura

        p = self.params
        text = trafilatura.extract(
            doc.text,
            include_comments=p.include_comments,
            include_tables=p.include_tables,
            favor_precision=p.favor_precision,
            favor_recall=p.favor_recall,
            deduplicate=False,  # its LRU cache makes the output depend on what the process saw before
        )
        if not text:
            return "no_main_text"
        doc.text = text
        doc.metadata["format"] = "text"
        return None


@dataclass
class FixUnicodeParams(StepParams):
    fix_character_width: bool = field(
        default=False, metadata={"help": "ftfy: full-width to half-width. Off: it rewrites Chinese ，。！ to ASCII."}
    )
    uncurl_quotes: bool = field(default=False, metadata={"help": "ftfy: “ ” to \". Off: it rewrites Chinese quotes."})
    normalization: str | None = field(
        default="NFC", metadata={"help": "Unicode normal form (NFC keeps full-width CJK punctuation; NFKC does not)."}
    )


@register
class FixUnicode(DocStep):
    """Repair mojibake and broken unicode with ftfy, with the settings that keep Chinese punctuation intact."""

    step_name = "fix_unicode"
    Params = FixUnicodeParams

    def process(self, doc: Document) -> str | None:
        import ftfy

        p = self.params
        doc.text = ftfy.fix_text(
            doc.text,
            fix_character_width=p.fix_character_width,
            uncurl_quotes=p.uncurl_quotes,
            normalization=p.normalization,
        )
        return None


# Control characters except tab and newline, zero-width and BOM characters, unpaired surrogates.
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200d\u2060\ufeff\ud800-\udfff]")
_SPACES_RE = re.compile(r"[^\S\n]+")
_BLANK_LINES_RE = re.compile(r"\n{3,}")


@dataclass
class NormalizeParams(StepParams):
    max_repeated_punctuation: int = field(
        default=3, metadata={"help": "Runs of one punctuation mark longer than this are cut to this length (!!!!!! → !!!)."}
    )
    max_blank_lines: int = field(
        default=1, metadata={"help": "Per line: consecutive blank lines kept between paragraphs."})


@register
class Normalize(DocStep):
    """Control characters out, whitespace collapsed per line, long punctuation runs shortened, lines trimmed."""

    step_name = "normalize"
    Params = NormalizeParams

    def __init__(self, params, **kwargs):
        super().__init__(params, **kwargs)
        n = params.max_repeated_punctuation
        self._punct_run = re.compile(r"([^\w\s])\1{%d,}" % n) if n > 0 else None
        self._blank = re.compile(r"\n{%d,}" % (params.max_blank_lines + 2))

    def process(self, doc: Document) -> str | None:
        text = _CONTROL_RE.sub("", doc.text.replace("\r\n", "\n").replace("\r", "\n"))
        # U+3000 (ideographic space) is whitespace too: collapse it like any other space inside a line.
        lines = [_SPACES_RE.sub(" ", line).strip() for line in text.split("\n")]
        text = "\n".join(lines).strip()
        if self._punct_run is not None:
            n = self.params.max_repeated_punctuation
            text = self._punct_run.sub(lambda m: m.group(1) * n, text)
        doc.text = self._blank.sub("\n" * (self.params.max_blank_lines + 1), text)
        return None


@dataclass
class BoilerplateParams(StepParams):
    patterns: list[str] = field(
        default_factory=lambda: [
            r"(?i)^(all rights reserved|copyright ©?|© ?\d{4})",
            r"(?i)\b(cookie policy|privacy policy|terms of (use|service))\b",
            r"(?i)^(click here|read more|share (this|on)|follow us|subscribe|sign up|log ?in|skip to (main )?content)\b",
            r"^(版权所有|Copyright|备案号|ICP备|点击(这里|此处)|分享到|扫一扫|关注我们|上一篇|下一篇|返回顶部)",
        ],
        metadata={"help": "Per line: regexes; a line matching any of them is removed (navigation, cookie and "
                  "copyright lines)."},
    )
    max_line_chars: int = field(
        default=200,
        metadata={"help": "Per line: only lines up to this many characters are removed (0 = any length): boilerplate "
                  "is short, and a long paragraph that mentions a privacy policy is content."},
    )


@register
class BoilerplateLines(DocStep):
    """Remove boilerplate lines (cookie notices, copyright, share/follow/login links, Chinese site furniture)."""

    step_name = "boilerplate_lines"
    Params = BoilerplateParams

    def __init__(self, params, **kwargs):
        super().__init__(params, **kwargs)
        self._patterns = [re.compile(p) for p in params.patterns]

    def process(self, doc: Document) -> str | None:
        kept, removed = [], 0
        limit = self.params.max_line_chars
        for line in doc.text.split("\n"):
            s = line.strip()
            if s and (not limit or len(s) <= limit) and any(p.search(s) for p in self._patterns):
                removed += 1
                continue
            kept.append(line)
        if removed:
            self.stat_update("lines_removed", value=removed)
            doc.text = "\n".join(kept).strip()
        return None


@dataclass
class OpenCCParams(StepParams):
    config: str = field(default="t2s", metadata={"help": "OpenCC conversion: t2s (character level), tw2sp, hk2s, ..."})
    mode: str = field(
        default="convert",
        metadata={"help": "convert: rewrite the text; tag: keep it and set metadata script=traditional|simplified."},
    )
    min_changed_ratio: float = field(
        default=0.0, metadata={"help": "tag mode: a document is 'traditional' when more than this share of CJK changes."}
    )

    def __post_init__(self):
        if self.mode not in ("convert", "tag"):
            raise ValueError(f"opencc: mode must be convert or tag, not {self.mode!r}")


@register
class TraditionalToSimplified(DocStep):
    """Traditional to simplified Chinese with OpenCC (opt-in), or only tag the script when the target keeps it."""

    step_name = "opencc"
    Params = OpenCCParams

    def __init__(self, params, **kwargs):
        super().__init__(params, **kwargs)
        self._cc = None

    def process(self, doc: Document) -> str | None:
        if self._cc is None:
            import opencc

            name = self.params.config
            self._cc = opencc.OpenCC(name if name.endswith(".json") else f"{name}.json")
        converted = self._cc.convert(doc.text)
        changed = sum(a != b for a, b in zip(doc.text, converted)) if len(converted) == len(doc.text) else 1
        cjk = sum(1 for c in doc.text if unicodedata.east_asian_width(c) == "W") or 1
        traditional = changed / cjk > self.params.min_changed_ratio
        doc.metadata["script"] = "traditional" if traditional else "simplified"
        if traditional:
            self.stat_update("documents_with_traditional_characters")
        if self.params.mode == "convert":
            doc.text = converted
        return None
