"""Extraction and cleaning steps on real pages and poems."""

import json

from data_prep.steps.clean import _CONTROL_RE

from dp_helpers import apply, make_step


def test_html_extraction_keeps_main_text_and_drops_boilerplate(data_dir):
    """trafilatura's own evaluation pairs: `with` snippets must be in the main text, `without` snippets must not."""
    cases = json.loads((data_dir / "trafilatura_html" / "evaldata_subset.json").read_text(encoding="utf-8"))
    step = make_step("extract_html")
    found = missing = leaked = absent = 0
    for case in cases.values():
        html = (data_dir / "trafilatura_html" / "cache" / case["file"]).read_text(encoding="utf-8")
        text = apply(step, html, language=None, format="html")
        assert text, case["file"]
        for snippet in case.get("with", []):
            found, missing = (found + 1, missing) if snippet in text else (found, missing + 1)
        for snippet in case.get("without", []):
            leaked, absent = (leaked + 1, absent) if snippet in text else (leaked, absent + 1)
    # trafilatura scores ~0.9 F1 on its benchmark; on these 17 pages we hold it to >= 90% of each list.
    assert found / (found + missing) >= 0.9, (found, missing)
    assert absent / (absent + leaked) >= 0.9, (absent, leaked)
    assert found + missing > 30 and absent + leaked > 30


def test_html_step_leaves_plain_text_alone(c4_texts):
    assert apply(make_step("extract_html"), c4_texts[0], format="text") == c4_texts[0]


def test_fix_unicode_repairs_mojibake_and_keeps_chinese_punctuation():
    step = make_step("fix_unicode")
    assert apply(step, "“你好！”他说：（测试）。", language="zh") == "“你好！”他说：（测试）。"
    assert apply(step, "The Mona Lisa doesnâ€™t have eyebrows.") == "The Mona Lisa doesn’t have eyebrows."
    # The library default would have flattened the Chinese punctuation: that is what the settings prevent.
    import ftfy

    assert ftfy.fix_text("“你好！”") != "“你好！”"


def test_normalize_removes_controls_and_collapses_whitespace():
    step = make_step("normalize")
    text = "Hello\u200b  world\x07!!!!!!\r\n\r\n\r\n\r\nNext\u3000 line\t here  "
    assert apply(step, text) == "Hello world!!!\n\nNext line here"
    assert not _CONTROL_RE.search(apply(step, "a\x00b\x1fc\ufeffd"))


def test_normalize_drops_documents_it_empties():
    step = make_step("normalize")
    assert apply(step, "\u200b\u200b \x00 \n\n") is None
    assert step.stats["dropped_empty_after_step"].total == 1


def test_boilerplate_lines_removed_from_real_page(c4_texts):
    step = make_step("boilerplate_lines")
    text = "Real content line that stays.\nAll rights reserved 2019.\nPlease read our Privacy Policy.\n版权所有 © 某公司\n正文。"
    assert apply(step, text) == "Real content line that stays.\n正文。"
    kept = [apply(step, t) for t in c4_texts]
    changed = [(k, t) for k, t in zip(kept, c4_texts) if k != t]
    assert 4 <= len(changed) <= 15  # C4 was filtered already: a few pages still carry such lines
    removed = {line for k, t in changed for line in set(t.split("\n")) - set(k.split("\n"))}
    assert "© 2018 Allergan. All rights reserved." in removed
    assert "Click here for the City of Corpus Christi Website." in removed
    assert all(len(line) <= 200 for line in removed)


def test_opencc_converts_tang_poems(tang_poems):
    step = make_step("opencc", config="t2s", mode="convert")
    poem = tang_poems[0]  # 太宗皇帝《帝京篇十首 一》
    assert "壯" in poem and "綺" in poem
    out = apply(step, poem, language="zh")
    assert out.startswith("秦川雄帝宅，函谷壮皇居。") and "绮殿千寻起" in out
    assert "壯" not in out and "綺" not in out
    converted = [apply(step, p, language="zh") for p in tang_poems[:200]]
    assert sum(c != p for c, p in zip(converted, tang_poems[:200])) > 150


def test_opencc_tag_mode_keeps_traditional_and_labels_it(tang_poems, song_ci):
    from datatrove.data import Document

    step = make_step("opencc", mode="tag")
    trad = Document(text=tang_poems[0], id="a", metadata={})
    simp = Document(text=song_ci[1], id="b", metadata={})
    out = list(step.run(iter([trad, simp])))
    assert out[0].text == tang_poems[0] and out[0].metadata["script"] == "traditional"
    assert out[1].metadata["script"] == "simplified"
