"""Language ID offline with lingua (its models ship inside the wheel): label every document, keep the wanted ones."""

from __future__ import annotations

from dataclasses import dataclass, field

from datatrove.data import Document

from data_prep.steps.base import DocStep, StepParams, register
from data_prep.text import cjk_count


@dataclass
class LanguageIdParams(StepParams):
    keep: dict[str, float] = field(
        default_factory=lambda: {"en": 0.65, "zh": 0.65},
        metadata={
            "help": "Language (ISO 639-1) -> minimum confidence to keep a document; others are dropped. 0.65 is "
            "FineWeb's fastText threshold for English; lingua's confidences are calibrated differently, so check the "
            "funnel's language_low_confidence drops when you change it."
        },
    )
    candidates: list[str] = field(
        default_factory=lambda: ["en", "zh", "de", "fr", "es", "ja", "ko", "ru"],
        metadata={"help": "Languages lingua chooses among (loading all 75 takes ~30 s and ~1 GB; keep this short)."},
    )
    max_chars: int = field(default=2000, metadata={"help": "Detect on the first N characters (speed; 0 = all)."})
    keep_all: bool = field(default=False, metadata={"help": "Only label documents (metadata.language), drop none."})
    ja_min_kana_share: float | None = field(
        default=None,
        metadata={"help": "A document detected as Japanese whose kana are under this share of its kana + Han "
                  "characters is labelled Chinese (zh). Japanese prose is about a third kana; a Chinese article that "
                  "gives a Japanese name's reading in kana, a few percent (lingua calls such text ja). None = off."},
    )


@register
class LanguageId(DocStep):
    """Detect the language (lingua, offline), set metadata.language, drop languages and confidences not kept."""

    step_name = "language_id"
    Params = LanguageIdParams

    def __init__(self, params, **kwargs):
        super().__init__(params, **kwargs)
        missing = set(params.keep) - set(params.candidates)
        if missing:
            raise ValueError(f"language_id: keep names {sorted(missing)} which are not in candidates")
        self._detector = None

    def _build(self):
        from lingua import IsoCode639_1, Language, LanguageDetectorBuilder

        langs = [Language.from_iso_code_639_1(getattr(IsoCode639_1, c.upper())) for c in self.params.candidates]
        return LanguageDetectorBuilder.from_languages(*langs).build()

    def process(self, doc: Document) -> str | None:
        if self._detector is None:
            self._detector = self._build()
        sample = doc.text[: self.params.max_chars] if self.params.max_chars else doc.text
        values = self._detector.compute_language_confidence_values(sample)
        if not values:
            return "language_unknown"
        # Ties (short, ambiguous text) come back in an arbitrary order: break them by language code.
        best = min(values, key=lambda v: (-v.value, v.language.iso_code_639_1.name))
        lang = best.language.iso_code_639_1.name.lower()
        if lang == "ja" and self.params.ja_min_kana_share is not None and _kana_share(sample) < self.params.ja_min_kana_share:
            lang = "zh"
        doc.metadata["language"] = lang
        doc.metadata["language_score"] = round(best.value, 4)
        self.stat_update(f"language_{lang}")
        if self.params.keep_all:
            return None
        if lang not in self.params.keep:
            return "language_not_kept"
        if best.value < self.params.keep[lang]:
            return "language_low_confidence"
        return None


def _kana_share(text: str) -> float:
    kana = sum("\u3040" <= c <= "\u30ff" for c in text)  # hiragana and katakana
    return kana / max(1, kana + cjk_count(text))
