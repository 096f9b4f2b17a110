import pytest

from llm_recipes.config import ConfigError
from llm_recipes.corpus import CorpusArguments, TextSource, load_corpus, load_source, script_language


def test_formats_of_the_shipped_data(data_dir):
    poems = load_source(TextSource(path=str(data_dir / "chinese_poetry/ci.song.0.json"), text_column="paragraphs"))
    assert len(poems) == 1000 and "\n" in poems[0]["text"]  # a list column joins its lines
    reviews = load_source(TextSource(path="${DATA_DIR}/chnsenticorp/ChnSentiCorp_htl_all.csv", text_column="review"))
    assert len(reviews) == 7766
    sst = load_source(TextSource(path=str(data_dir / "sst2/sst2_glue_dev.tsv"), text_column="sentence"))
    assert len(sst) == 872 and sst[0]["text"].startswith("it 's a charming")
    plays = load_source(TextSource(path=str(data_dir / "tinyshakespeare/input.txt"), sample_by="paragraph"))
    lines = load_source(TextSource(path=str(data_dir / "tinyshakespeare/input.txt"), sample_by="line"))
    assert 1000 < len(plays) < len(lines) == 40000


def test_split_is_seeded_and_counts_empties(tmp_path):
    (tmp_path / "a.txt").write_text("one\n\ntwo\n   \nthree\nfour\nfive\nsix\nseven\neight\n", encoding="utf-8")
    args = CorpusArguments(train_sources=[{"path": str(tmp_path / "a.txt")}], validation_split_size=0.25, seed=1)
    first, stats = load_corpus(args)
    second, _ = load_corpus(args)
    assert list(first["validation"]["text"]) == list(second["validation"]["text"])
    assert stats["train"].documents + stats["validation"].documents == 8
    assert stats["train"].empty_documents_skipped + stats["validation"].empty_documents_skipped == 2
    other, _ = load_corpus(CorpusArguments(train_sources=[str(tmp_path / "a.txt")], validation_split_size=0.25, seed=2))
    assert sorted([*other["train"]["text"], *other["validation"]["text"]]) == sorted([*first["train"]["text"], *first["validation"]["text"]])


def test_explicit_validation_sources(data_dir):
    args = CorpusArguments(
        train_sources=[str(data_dir / "wikitext2/valid.txt")], validation_sources=[str(data_dir / "wikitext2/test.txt")]
    )
    splits, stats = load_corpus(args)
    assert stats["train"].empty_documents_skipped > 0  # WikiText's blank lines
    assert len(splits["validation"]) == stats["validation"].documents > 0


def test_folder_with_mixed_formats_is_refused(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "x"}\n')
    (tmp_path / "b.txt").write_text("y\n")
    with pytest.raises(ConfigError, match="mixes file formats"):
        load_source(TextSource(path=str(tmp_path)))


@pytest.mark.parametrize("size", [1.0, -0.1])
def test_validation_split_size_out_of_range_is_an_error(size):
    with pytest.raises(ConfigError, match=r"validation_split_size must be in \[0, 1\)"):
        CorpusArguments(train_sources=["a.jsonl"], validation_split_size=size)


def test_no_sources_is_an_error():
    with pytest.raises(ConfigError, match="train_sources is empty"):
        load_corpus(CorpusArguments())


@pytest.mark.parametrize("text,lang", [("The llama grazes.", "en"), ("羊驼在吃草。", "zh"), ("用 GPU 训练模型", "zh"), ("", "en")])
def test_script_language(text, lang):
    assert script_language(text) == lang


def test_glob_skips_files_of_other_formats(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "kept"}\n')
    (tmp_path / "notes.md").write_text("not a corpus file\n")
    ds = load_source(TextSource(path=str(tmp_path / "*")))
    assert list(ds["text"]) == ["kept"]


def test_source_entry_must_be_path_or_mapping():
    with pytest.raises(ConfigError, match=r"train_sources\[0\]: expected a path"):
        CorpusArguments(train_sources=[42])
