"""Near-dup recall on planted near-copies of real documents, no false merges among distinct real documents."""

import csv
import random

from datatrove.data import Document

from data_prep.dedup import (DedupBuckets, DedupClusters, DedupSignatures, MinhashParams, band_hashes, bucket_names,
                             shingles)


def _clusters(tmp_path, texts: list[tuple[str, str]], exact=True, minhash=True) -> dict[str, tuple[str, str]]:
    """Run the real signature and cluster steps; {removed id: (reason, kept id)}."""
    import json

    docs = [Document(text=t, id=i, metadata={"order": [0, 0, n], "language": lang}) for n, (i, t, lang) in
            enumerate((i, t, "zh" if any("\u4e00" <= c <= "\u9fff" for c in t[:50]) else "en") for i, t in texts)]
    p = MinhashParams() if minhash else None
    assert len(list(DedupSignatures(str(tmp_path / "sig"), exact=exact, minhash=p).run(iter(docs)))) == len(docs)
    list(DedupBuckets(str(tmp_path / "sig"), str(tmp_path / "pairs"), bucket_names(exact, p)).run())
    list(DedupClusters(str(tmp_path / "sig"), str(tmp_path / "pairs"), str(tmp_path / "removed")).run())
    lines = [line for f in sorted((tmp_path / "removed").glob("*.jsonl")) for line in f.read_text().splitlines()]
    return {r["id"]: (r["reason"], r["duplicate_of"]) for r in map(json.loads, lines)}


def _near_copy(text: str, rng: random.Random, kind: int) -> str:
    words = text.split(" ")
    if kind == 0:  # the page scraped again with a different header and footer
        return "Home | News | Contact\n" + text + "\nShare this article on Facebook and Twitter."
    if kind == 1:  # about 1 word in 100 changed
        for _ in range(max(1, len(words) // 100)):
            words[rng.randrange(len(words))] = rng.choice(["the", "a", "new", "2019", "more"])
        return " ".join(words)
    return " ".join(words[: int(len(words) * 0.95)])  # truncated copy


def test_planted_near_copies_are_found(tmp_path, c4_texts):
    rng = random.Random(0)
    originals = [t for t in c4_texts if len(t.split()) >= 150][:90]
    docs = [(f"orig{i}", t) for i, t in enumerate(originals)]
    planted = [(f"copy{i}", _near_copy(t, rng, i % 3)) for i, t in enumerate(originals)]
    removed = _clusters(tmp_path, docs + planted)
    found = [cid for cid, _ in planted if removed.get(cid, (None, None))[1] == "orig" + cid[4:]]
    assert len(found) / len(planted) >= 0.95, len(found)
    assert not any(i.startswith("orig") for i in removed)  # the first one (source order) is always the one kept


def test_no_false_merge_among_distinct_real_documents(tmp_path, c4_texts, data_dir):
    """The 300 C4 pages, WikiText paragraphs and MRPC's non-paraphrase sentence pairs hold no near-duplicates."""
    wiki = [line.strip() for line in (data_dir / "wikitext2" / "valid.txt").read_text(encoding="utf-8").splitlines()
            if len(line.split()) > 60]
    with open(data_dir / "mrpc" / "mrpc_glue_dev.tsv", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
    mrpc = [s for row in rows if row[0] == "0" for s in (row[3], row[4])]
    texts = list(dict.fromkeys(c4_texts + wiki + mrpc))  # exact repeats are not what this test is about
    removed = _clusters(tmp_path, [(f"d{i}", t) for i, t in enumerate(texts)], exact=False)
    p = MinhashParams()
    for removed_id, (_, kept_id) in removed.items():
        a, b = (set(shingles(texts[int(i[1:])], "en", p)) for i in (removed_id, kept_id))
        # A merge is false unless the two texts share at least half of their 5-grams (numbers read as 0, as in
        # FineWeb): MRPC holds a few template twins such as two stock-price sentences that differ only in figures.
        assert len(a & b) / len(a | b) >= 0.5, (texts[int(removed_id[1:])][:100], texts[int(kept_id[1:])][:100])
    assert len(removed) <= 5
    strict = MinhashParams(normalize_numbers=False)
    assert all(len(set(shingles(texts[int(k[1:])], "en", strict)) ^ set(shingles(texts[int(v[1][1:])], "en", strict)))
               for k, v in removed.items())  # near-copies (one word or figure apart), never exact copies


def test_chinese_near_copies_use_character_ngrams(tmp_path, tang_poems):
    rng = random.Random(1)
    groups = ["\n".join(tang_poems[i : i + 5]) for i in range(0, 400, 5)]
    planted = []
    for i, text in enumerate(groups):
        chars = list(text)
        for _ in range(2):
            j = rng.randrange(len(chars))
            if "\u4e00" <= chars[j] <= "\u9fff":
                chars[j] = "月"
        planted.append((f"copy{i}", "".join(chars)))
    removed = _clusters(tmp_path, [(f"orig{i}", t) for i, t in enumerate(groups)] + planted)
    found = sum(removed.get(cid, ("", ""))[1] == "orig" + cid[4:] for cid, _ in planted)
    assert found / len(planted) >= 0.95
    assert not any(k.startswith("orig") for k in removed)


def test_exact_dedup_ignores_case_and_punctuation(tmp_path, c4_texts):
    text = c4_texts[5]
    variant = text.upper().replace(",", " ").replace(".", " . ")
    removed = _clusters(tmp_path, [("a", text), ("b", variant), ("c", c4_texts[6])], minhash=False)
    assert removed == {"b": ("exact_duplicate", "a")}


def test_signatures_are_stable(c4_texts):
    p = MinhashParams()
    first = band_hashes(c4_texts[0], "en", p)
    assert (first == band_hashes(c4_texts[0], "en", p)).all() and first.shape == (14,)
    assert not (first == band_hashes(c4_texts[1], "en", p)).any()


def _run_tasks(tmp_path, tasks: list[list[tuple[str, str, int]]], dedup_tasks=1, chunk_records=1_000_000):
    """Signatures written by len(tasks) tasks (each a list of (id, text, source row)), buckets merged by dedup_tasks
    tasks, then clusters: {removed id: (reason, kept id)}."""
    import json

    p = MinhashParams()
    for rank, docs in enumerate(tasks):
        stream = (Document(text=t, id=i, metadata={"order": [0, 0, row], "language": "en"}) for i, t, row in docs)
        list(DedupSignatures(str(tmp_path / "sig"), exact=True, minhash=p).run(stream, rank, len(tasks)))
    for rank in range(dedup_tasks):
        step = DedupBuckets(str(tmp_path / "sig"), str(tmp_path / "pairs"), bucket_names(True, p), chunk_records)
        list(step.run(None, rank, dedup_tasks))
    list(DedupClusters(str(tmp_path / "sig"), str(tmp_path / "pairs"), str(tmp_path / "removed")).run())
    lines = [line for f in sorted((tmp_path / "removed").glob("*.jsonl")) for line in f.read_text().splitlines()]
    return {r["id"]: (r["reason"], r["duplicate_of"]) for r in map(json.loads, lines)}


def test_duplicate_spanning_two_tasks_keeps_the_first_in_source_order(tmp_path, c4_texts):
    rng = random.Random(0)
    # Task 0 holds the later copy (row 900), task 1 the original (row 5): the original is kept all the same.
    task0 = [(f"a{i}", c4_texts[i], 100 + i) for i in range(20, 40)] + [("copy", _near_copy(c4_texts[3], rng, 1), 900)]
    task1 = [(f"b{i}", c4_texts[i], 200 + i) for i in range(40, 60)] + [("orig", c4_texts[3], 5)]
    task1.append(("exact", c4_texts[3].upper(), 901))
    removed = _run_tasks(tmp_path, [task0, task1])
    assert removed == {"copy": ("near_duplicate", "orig"), "exact": ("exact_duplicate", "orig")}


def test_a_corpus_of_copies_of_one_document(tmp_path, c4_texts):
    """Every document a copy of the first, one hash group bigger than the merge chunk: all but the first go."""
    rng = random.Random(1)
    docs = [("first", c4_texts[0], 0)] + [(f"c{i}", _near_copy(c4_texts[0], rng, i % 3), i) for i in range(1, 120)]
    tasks = [docs[i::3] for i in range(3)]
    removed = _run_tasks(tmp_path, tasks, chunk_records=4)
    assert set(removed) == {d[0] for d in docs[1:]}
    # Near-copies point at the kept document; an exact copy at the first identical one (itself a near-copy here).
    assert {kept for reason, kept in removed.values() if reason == "near_duplicate"} == {"first"}
    assert {reason for reason, _ in removed.values()} == {"near_duplicate", "exact_duplicate"}


def test_result_is_the_same_for_any_chunk_and_number_of_bucket_tasks(tmp_path, c4_texts):
    """Chunked merging links a hash group split across chunks; bucket tasks only share out the buckets."""
    rng = random.Random(2)
    docs = [(f"d{i}", t, i) for i, t in enumerate(c4_texts[:150])]
    docs += [(f"p{i}", _near_copy(c4_texts[i % 50], rng, i % 3), 1000 + i) for i in range(60)]
    docs += [(f"x{i}", c4_texts[i % 7], 2000 + i) for i in range(30)]  # exact copies, groups of 5
    rng.shuffle(docs)
    tasks = [docs[i::4] for i in range(4)]
    reference = _run_tasks(tmp_path / "ref", tasks)
    assert len(reference) >= 85
    for dedup_tasks, chunk in ((4, 1_000_000), (1, 3), (3, 1)):
        assert _run_tasks(tmp_path / f"{dedup_tasks}_{chunk}", tasks, dedup_tasks, chunk) == reference


def test_bucket_merge_memory_is_bounded_by_the_chunk_not_the_corpus(tmp_path):
    """4 tasks x 250,000 signatures (44 MB a bucket) merged with 50,000-record chunks: the merge's own allocations
    stay a few MB, so no process ever holds every signature of a bucket (the files are memory-mapped)."""
    import tracemalloc

    import numpy as np

    from data_prep.dedup import NODE, SIGNATURE

    rng = np.random.default_rng(0)
    for task in range(4):
        sigs = np.zeros(250_000, SIGNATURE)
        sigs["hash"] = rng.integers(1, 2**40, len(sigs), dtype=np.uint64)
        sigs["row"], sigs["task"], sigs["idx"] = np.arange(len(sigs)) * 4 + task, task, np.arange(len(sigs))
        (tmp_path / "sig" / f"{task:05d}").mkdir(parents=True)
        np.save(tmp_path / "sig" / f"{task:05d}" / "exact.npy", np.sort(sigs, order=["hash", *NODE.names]))
    step = DedupBuckets(str(tmp_path / "sig"), str(tmp_path / "pairs"), ["exact"], chunk_records=50_000)
    tracemalloc.start()
    list(step.run())
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert step.stats["records"].total == 1_000_000
    assert peak < 12 * 2**20, f"peak {peak / 2**20:.1f} MiB for a 44 MB bucket"
