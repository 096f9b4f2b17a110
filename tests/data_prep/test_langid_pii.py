"""Language ID on real text in three languages; PII replacement on realistic strings."""

from dp_helpers import apply, make_step

from data_prep.steps.pii import valid_cn_resident_id


def test_language_id_labels_real_text(c4_texts, song_ci, tang_poems, data_dir):
    step = make_step("language_id")
    from datatrove.data import Document

    docs = [Document(text=t, id=str(i), metadata={}) for i, t in enumerate(c4_texts[:40] + song_ci[:20] + tang_poems[:20])]
    out = {d.id: d.metadata["language"] for d in step.run(iter(docs))}
    langs = [out.get(str(i)) for i in range(80)]
    assert sum(lang == "en" for lang in langs[:40]) >= 38
    assert all(lang == "zh" for lang in langs[40:])
    assert step.stats["language_zh"].total == 40


def test_language_id_drops_german_page(data_dir):
    import trafilatura

    html = (data_dir / "trafilatura_html" / "cache" / "die-partei.net.luebeck.html").read_text(encoding="utf-8")
    text = trafilatura.extract(html)
    step = make_step("language_id")
    assert apply(step, text, language=None) is None
    assert step.stats["language_de"].total == 1 and step.stats["dropped_language_not_kept"].total == 1


def test_language_id_threshold_is_per_language(c4_texts):
    """Short snippets of real pages have lower confidence: a stricter English threshold drops more of them."""
    snippets = [" ".join(t.split()[:4]) for t in c4_texts[:100]]
    lenient = make_step("language_id", keep={"en": 0.5, "zh": 0.5})
    strict = make_step("language_id", keep={"en": 0.95, "zh": 0.5})
    kept_lenient = sum(apply(lenient, s, language=None) is not None for s in snippets)
    kept_strict = sum(apply(strict, s, language=None) is not None for s in snippets)
    assert kept_strict < kept_lenient
    assert strict.stats["dropped_language_low_confidence"].total > lenient.stats["dropped_language_low_confidence"].total


def test_pii_replaces_realistic_strings():
    step = make_step("pii")
    text = (
        "Contact John at john.smith@acme-corp.com or (415) 555-0132; our server is 93.184.216.34.\n"
        "客服电话：13812345678，或 +86 139-1234-5678；邮箱 kefu@163.com。\n"
        "身份证号：11010519491231002X。SSN 078-05-1120.\n"
        "Keep: version 3.14, 192.168.0.1 (private), order 2019-2020, ISBN 978-3-16-148410-0, id 110105194912310021."
    )
    out = apply(step, text)
    assert out.count("<EMAIL>") == 2 and out.count("<PHONE>") == 3 and out.count("<IP>") == 1
    assert out.count("<ID_NUMBER>") == 2
    for kept in ("3.14", "192.168.0.1", "2019-2020", "978-3-16-148410-0", "110105194912310021"):
        assert kept in out, kept
    for gone in ("john.smith", "13812345678", "11010519491231002X", "93.184.216.34"):
        assert gone not in out
    assert step.stats["replaced_cn_mobile"].total == 2 and step.stats["replaced_cn_resident_id"].total == 1


def test_resident_id_checksum():
    assert valid_cn_resident_id("11010519491231002X")
    assert not valid_cn_resident_id("110105194912310021")


def test_pii_leaves_real_prose_mostly_alone(c4_texts):
    step = make_step("pii")
    changed = sum(apply(step, t) != t for t in c4_texts)
    assert changed < 0.1 * len(c4_texts)
    assert step.stats["docs_out"].total == len(c4_texts)
