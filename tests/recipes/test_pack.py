import json

import datasets
import numpy as np
import pytest
from transformers import AutoTokenizer

import recipes.pack
from testkit import run_recipe_error
import warmproc


def write_jsonl(path, texts):
    path.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def real_docs(data_dir):
    """Real English and Chinese documents, with empty and whitespace-only ones mixed in."""
    en = [l for l in (data_dir / "wikitext2/test.txt").read_text(encoding="utf-8").splitlines() if l.strip()][:300]
    reviews = (data_dir / "chnsenticorp/ChnSentiCorp_htl_all.csv").read_text(encoding="utf-8").splitlines()[1:301]
    zh = [r.split(",", 1)[1] for r in reviews]
    docs = [d for pair in zip(en, zh) for d in pair]
    docs[5:5] = ["", "   ", "\n\t\n"]  # 3 empty documents, to be skipped and counted
    docs.append("a document that mentions </s> and <|im_start|> and <pad> as plain text")
    return docs


def encode_as_text(tok, text):
    return tok(text, add_special_tokens=False, split_special_tokens=True).input_ids


def pack(tmp_path, corpus, tokenizer_dir, *extra, name="packed"):
    out = tmp_path / name
    summary = recipes.pack.main(
        ["--train_sources", str(corpus), "--tokenizer_name_or_path", str(tokenizer_dir), "--output_dir", str(out),
         "--block_size", "64", "--validation_split_size", "0.1", "--num_proc", "2", *extra]
    )
    return out, summary


def test_conservation_and_no_padding(tmp_path, real_docs, tiny_tokenizer_dir):
    corpus = write_jsonl(tmp_path / "docs.jsonl", real_docs)
    out, summary = pack(tmp_path, corpus, tiny_tokenizer_dir, "--pack_batch_size", "50")
    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    on_disk = datasets.load_from_disk(str(out))
    assert json.loads((out / "stats.json").read_text()) == summary
    train, val = summary["splits"]["train"], summary["splits"]["validation"]
    assert train["empty_documents_skipped"] + val["empty_documents_skipped"] == 3
    assert train["documents"] + val["documents"] == len(real_docs) - 3
    total_tokens = 0
    for name, s in summary["splits"].items():
        blocks = np.array(on_disk[name]["input_ids"])
        assert blocks.shape == (s["blocks"], 64)
        assert s["tokens"] == s["blocks"] * 64 + s["dropped_tail_tokens"]
        assert 0 <= s["dropped_tail_tokens"] < 64 * -(-s["documents"] // 50)  # < one block per packing group
        assert s["real_token_share"] == 1.0 and not (blocks == tok.pad_token_id).any()
        total_tokens += s["tokens"]
    # independent count: each non-empty document encoded alone (special-token look-alikes as text), plus its EOS
    expected = sum(len(encode_as_text(tok, d)) + 1 for d in real_docs if d.strip())
    assert total_tokens == expected
    # the special-token look-alike in the text stayed text: EOS appears once per document, never more
    eos_count = sum(int((np.array(on_disk[n]["input_ids"]) == tok.eos_token_id).sum()) for n in on_disk)
    assert eos_count <= train["documents"] + val["documents"]  # exact stream check: next test


def test_one_group_blocks_are_the_document_stream(tmp_path, real_docs, tiny_tokenizer_dir):
    corpus = write_jsonl(tmp_path / "docs.jsonl", real_docs)
    out, summary = pack(tmp_path, corpus, tiny_tokenizer_dir, "--pack_batch_size", "100000", "--validation_split_size", "0",
                        "--num_proc", "1")  # one process, one group: blocks are a prefix of the stream
    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    stream = [i for d in real_docs if d.strip() for i in encode_as_text(tok, d) + [tok.eos_token_id]]
    blocks = datasets.load_from_disk(str(out))["train"]["input_ids"]
    flat = [i for b in blocks for i in b]
    assert flat == stream[: len(flat)] and len(stream) - len(flat) == summary["splits"]["train"]["dropped_tail_tokens"]
    decoded = tok.decode(stream)
    assert "</s> and <|im_start|> and <pad> as plain text</s>" in decoded


def test_rerun_reuses_cache_and_is_byte_identical(tmp_path, real_docs, tiny_tokenizer_dir):
    corpus = write_jsonl(tmp_path / "docs.jsonl", real_docs)
    a, sa = pack(tmp_path, corpus, tiny_tokenizer_dir, name="a")
    b, sb = pack(tmp_path, corpus, tiny_tokenizer_dir, name="b")
    assert sa == sb
    for split in ("train", "validation"):
        files = sorted(p.name for p in (a / split).iterdir())
        assert files == sorted(p.name for p in (b / split).iterdir())
        for name in files:
            assert (a / split / name).read_bytes() == (b / split / name).read_bytes(), f"{split}/{name} differs"
    # and the cache key follows the parameters
    _, sc = pack(tmp_path, corpus, tiny_tokenizer_dir, "--block_size", "32", name="c")
    assert sc["splits"]["train"]["fingerprint"] != sa["splits"]["train"]["fingerprint"]


def test_bad_jsonl_line_names_file_and_line(tmp_path, tiny_tokenizer_dir, capsys):
    corpus = tmp_path / "bad.jsonl"
    corpus.write_text('{"text": "fine"}\n{"text": "also fine"}\n{"text": broken\n', encoding="utf-8")
    err = run_recipe_error("pack", ["--train_sources", str(corpus), "--tokenizer_name_or_path", str(tiny_tokenizer_dir),
                                    "--output_dir", str(tmp_path / "out")], capsys)
    assert f"{corpus}, line 3" in err and "invalid JSON" in err
    assert not (tmp_path / "out").exists()


def test_non_utf8_file_names_file_and_line(tmp_path, tiny_tokenizer_dir, capsys):
    corpus = tmp_path / "latin1.txt"
    corpus.write_bytes("first line\nsecond line\ncaf\u00e9 in latin-1\n".encode("latin-1"))
    err = run_recipe_error("pack", ["--train_sources", str(corpus), "--tokenizer_name_or_path", str(tiny_tokenizer_dir),
                                    "--output_dir", str(tmp_path / "out")], capsys)
    assert f"{corpus}, line 3" in err and "not UTF-8" in err


@pytest.mark.parametrize(
    "yaml_sources,message",
    [
        ('[{path: "/nonexistent/corpus.jsonl"}]', "source not found"),
        ('[{path: "${DATA_DIR}/c4_demo/c4_demo.jsonl", column: text}]', "unknown key"),
        ('[{path: "${DATA_DIR}/c4_demo/c4_demo.jsonl", text_column: body}]', "no column 'body'"),
    ],
)
def test_bad_source_config(tmp_path, tiny_tokenizer_dir, capsys, yaml_sources, message):
    cfg = tmp_path / "pack.yaml"
    cfg.write_text(f"train_sources: {yaml_sources}\ntokenizer_name_or_path: {tiny_tokenizer_dir}\n"
                   f"output_dir: {tmp_path / 'out'}\n")
    err = run_recipe_error("pack", ["--config", str(cfg)], capsys)
    assert message in err


@pytest.mark.slow
def test_killed_runs_never_look_complete_and_a_rerun_is_byte_identical(tmp_path, real_docs, tiny_tokenizer_dir):
    """SIGKILL at seeded points across the run (each in a fresh datasets cache, so the kill lands in real work), then
    rerun in the same cache: the output equals an uninterrupted run's byte for byte, and a killed run never leaves a
    folder at output_dir."""
    import os
    import random
    import signal
    import subprocess
    import sys
    import time

    import psutil  # a dependency of deepspeed and ray
    from testkit import REPO_ROOT

    corpus = write_jsonl(tmp_path / "docs.jsonl", real_docs * 4)

    def start(out, cache):
        env = {**os.environ, "HF_DATASETS_CACHE": str(cache)}
        args = ["--train_sources", str(corpus), "--tokenizer_name_or_path", str(tiny_tokenizer_dir), "--output_dir",
                str(out), "--block_size", "64", "--validation_split_size", "0.1", "--num_proc", "2"]
        return warmproc.popen([sys.executable, str(REPO_ROOT / "recipes/pack.py"), *args], cwd=REPO_ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def files(out):
        return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
                if p.is_file() and p.name not in ("run_info.json", "resolved_config.yaml")}  # they name the run

    began = time.time()
    baseline = tmp_path / "baseline"
    proc = start(baseline, tmp_path / "cache-baseline")
    assert proc.wait(timeout=300) == 0, proc.stderr.read()[-2000:]
    duration = time.time() - began

    rng = random.Random(1234)
    # three seeded points across the run, and one while the output is being written (its staging folder exists)
    for i, fraction in enumerate([*sorted(rng.uniform(0.2, 0.95) for _ in range(3)), "write"]):
        out, cache = tmp_path / f"killed{i}", tmp_path / f"cache{i}"
        proc = start(out, cache)
        if fraction == "write":
            while proc.poll() is None and not list(tmp_path.glob(f".{out.name}.*.tmp")):
                time.sleep(0.005)
        else:
            time.sleep(fraction * duration)
        if proc.poll() is None:
            workers = psutil.Process(proc.pid).children(recursive=True)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            for worker in workers:  # its map workers: orphans that would wait on their queue for the rest of the session
                worker.kill()
            # killed before its final rename: no folder; killed after it (while logging): the finished output
            assert not out.exists() or files(out) == files(baseline), f"a killed run left a partial {out.name}"
        proc = start(out, cache)
        assert proc.wait(timeout=300) == 0, proc.stderr.read()[-2000:]
        assert files(out) == files(baseline), f"rerun after a kill at {fraction} of the run differs"


def test_weighted_mixture_realises_the_token_shares_without_repeating_a_document(tmp_path, real_docs,
                                                                                  tiny_tokenizer_dir):
    """Chinese with 20 % English replayed: the realised token shares (stats.json) match the weights to a document's
    worth, the scarcer source bounds the mixture, and no document is packed twice."""
    import yaml

    en = write_jsonl(tmp_path / "en.jsonl", [d for d in real_docs[::2] if d.strip()])
    zh = write_jsonl(tmp_path / "zh.jsonl", [d for d in real_docs[1::2] if d.strip()])
    config = tmp_path / "mix.yaml"
    config.write_text(yaml.safe_dump({"train_sources": [{"path": str(zh), "weight": 0.8},
                                                        {"path": str(en), "weight": 0.2}]}))
    out = tmp_path / "mixed"
    summary = recipes.pack.main(["--config", str(config), "--tokenizer_name_or_path", str(tiny_tokenizer_dir),
                                 "--output_dir", str(out), "--block_size", "64", "--num_proc", "2"])
    mixture = summary["splits"]["train"]["mixture"]
    assert [m["source"] for m in mixture] == [str(zh), str(en)]
    assert abs(mixture[0]["share"] - 0.8) < 0.02 and abs(mixture[1]["share"] - 0.2) < 0.02
    scarce = min(mixture, key=lambda m: m["available_tokens"] / m["weight"])
    assert scarce["tokens"] > 0.95 * scarce["available_tokens"]  # the limiting source is (nearly) all used
    assert sum(m["tokens"] for m in mixture) == summary["splits"]["train"]["tokens"]
    assert json.loads((out / "stats.json").read_text())["splits"]["train"]["mixture"] == mixture
    # the same mixture as compact shards: the same blocks, the same realised shares
    from llm_recipes.shards import load_packed

    sharded = tmp_path / "mixed-shards"
    again = recipes.pack.main(["--config", str(config), "--tokenizer_name_or_path", str(tiny_tokenizer_dir),
                               "--output_dir", str(sharded), "--block_size", "64", "--num_proc", "2",
                               "--output_format", "shards"])
    assert again["splits"]["train"]["mixture"] == mixture
    blocks = load_packed(sharded)[0]["train"]
    assert np.array_equal(np.stack([blocks[i]["input_ids"] for i in range(len(blocks))]),
                          np.array(datasets.load_from_disk(str(out))["train"]["input_ids"]))


def test_weights_for_some_sources_only_are_refused(tmp_path, tiny_tokenizer_dir, capsys):
    import yaml

    config = tmp_path / "mix.yaml"
    config.write_text(yaml.safe_dump({"train_sources": [{"path": "a.jsonl", "weight": 0.8}, {"path": "b.jsonl"}]}))
    err = run_recipe_error("pack", ["--config", str(config), "--tokenizer_name_or_path", str(tiny_tokenizer_dir),
                                    "--output_dir", str(tmp_path / "o")], capsys)
    assert "set `weight` for every source of the mixture or for none" in err


# --- output_format: shards ----------------------------------------------------------------------------------------


def test_shards_hold_the_arrow_blocks_in_two_bytes_a_token(tiny_packed_dir, tiny_sharded_dir):
    """The same blocks, in the same order, as the Arrow format: uint16 files of 97 blocks, 2 bytes a token, read
    memory-mapped; the stats say the format."""
    from llm_recipes.shards import PackedBlocks, load_packed

    arrow, _ = load_packed(tiny_packed_dir)
    sharded, stats = load_packed(tiny_sharded_dir)
    index = json.loads((tiny_sharded_dir / "index.json").read_text())
    assert index["dtype"] == "uint16" and stats["format"] == {"output_format": "shards", "dtype": "uint16",
                                                              "bytes_per_token": 2}
    assert index["tokenizer"]["sha256"] == stats["tokenizer"]["sha256"]
    assert set(sharded) == set(arrow) == {"train", "validation"}
    for split, blocks in sharded.items():
        assert isinstance(blocks, PackedBlocks) and len(blocks) == len(arrow[split]) == stats["splits"][split]["blocks"]
        shards = index["splits"][split]["shards"]
        assert [s["blocks"] for s in shards[:-1]] == [97] * (len(shards) - 1) and 0 < shards[-1]["blocks"] <= 97
        assert sum((tiny_sharded_dir / s["file"]).stat().st_size for s in shards) == 2 * len(blocks) * 64
        rows = np.stack([blocks[i]["input_ids"] for i in range(len(blocks))])
        assert rows.dtype == np.int64 and (rows == np.array(arrow[split]["input_ids"])).all()
    with pytest.raises(IndexError):
        sharded["train"][len(sharded["train"])]


@pytest.mark.slow  # Qwen's 152k-token tokenizer loads in ~2 s
def test_a_vocabulary_over_65536_ids_packs_to_uint32(tmp_path, real_docs, family_model_dir):
    from llm_recipes.shards import load_packed

    corpus = write_jsonl(tmp_path / "docs.jsonl", real_docs[:120])
    out, summary = pack(tmp_path, corpus, family_model_dir("qwen2"), "--output_format", "shards")
    assert summary["format"]["dtype"] == "uint32" and summary["format"]["bytes_per_token"] == 4
    blocks, _ = load_packed(out)
    arrow_out, _ = pack(tmp_path, corpus, family_model_dir("qwen2"), name="arrow")
    arrow = datasets.load_from_disk(str(arrow_out))
    for split in ("train", "validation"):
        rows = np.stack([blocks[split][i]["input_ids"] for i in range(len(blocks[split]))])
        assert (rows == np.array(arrow[split]["input_ids"])).all()
    assert max(blocks["train"].max_id(), blocks["validation"].max_id()) >= 2**16  # ids a uint16 could not hold


# --- executor local / ray / slurm: datatrove tasks, one shard per file ----------------------------------------------


def split_corpus(folder, docs, files):
    """`docs` as `files` JSONL files in folder (a data_prep-like split: several files, sorted names)."""
    folder.mkdir(parents=True)
    for i in range(files):
        write_jsonl(folder / f"{i:05d}.jsonl", docs[i::files])
    return folder


def shard_files(out):
    """What a pack run wrote, minus the two files that name the run (folder, executor, tasks, start time)."""
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name not in ("run_info.json", "resolved_config.yaml")}


@pytest.mark.slow  # three datatrove runs (a fork server and a process per task each, ~3 s) and a datasets-path pack
def test_any_task_count_writes_the_same_shards_and_a_file_per_split_packs_as_the_datasets_path(tmp_path, real_docs,
                                                                                               tiny_tokenizer_dir):
    """1, 2 and 4 tasks over 4 train files: the same bytes; each file is a shard. A split that is one file: the very
    blocks and stats of the default (datasets) path with one map process."""
    from llm_recipes.shards import load_packed

    docs = [d for d in real_docs if d.strip()] * 2
    train, validation = split_corpus(tmp_path / "train", docs[:-60], 4), split_corpus(tmp_path / "val", docs[-60:], 1)
    runs = {}
    for tasks in (1, 2, 4):
        out, summary = pack(tmp_path, train, tiny_tokenizer_dir, "--validation_sources", str(validation),
                            "--executor", "local", "--tasks", str(tasks), "--pack_batch_size", "50",
                            name=f"tasks{tasks}")
        runs[tasks] = shard_files(out)
    assert runs[1] == runs[2] == runs[4]
    index = json.loads(runs[1]["index.json"])
    assert [s["file"] for s in index["splits"]["train"]["shards"]] == [f"train/{i:05d}.bin" for i in range(4)]
    assert summary == json.loads(runs[1]["stats.json"]) and summary["splits"]["train"]["documents"] == len(docs) - 60

    one_file = split_corpus(tmp_path / "one", docs[:-60], 1)
    # num_proc 1: with more map workers the default path restarts its groups at each worker's first row
    args = ["--validation_sources", str(validation), "--pack_batch_size", "50", "--num_proc", "1"]
    sharded, sharded_summary = pack(tmp_path, one_file, tiny_tokenizer_dir, *args, "--executor", "local",
                                    "--tasks", "2", name="sharded")
    arrow, arrow_summary = pack(tmp_path, one_file, tiny_tokenizer_dir, *args, name="arrow")
    for split in ("train", "validation"):
        expected = np.array(load_packed(arrow)[0][split]["input_ids"])
        got = load_packed(sharded)[0][split]
        assert np.array_equal(np.stack([got[i]["input_ids"] for i in range(len(got))]), expected)
        assert {k: v for k, v in sharded_summary["splits"][split].items() if k != "fingerprint"} == \
               {k: v for k, v in arrow_summary["splits"][split].items() if k != "fingerprint"}


@pytest.mark.parametrize("extra,message", [
    (["--validation_sources", "{val}", "--max_documents", "10"], "quick runs pack with executor datasets"),
    ([], "set validation_sources"),
    (["--executor", "slurm"], "needs slurm_partition"),
])
def test_a_per_file_pack_refuses_what_needs_the_whole_corpus(tmp_path, real_docs, tiny_tokenizer_dir, capsys, extra,
                                                            message):
    train, val = split_corpus(tmp_path / "train", real_docs, 2), split_corpus(tmp_path / "val", real_docs[:20], 1)
    args = ["--train_sources", str(train), "--tokenizer_name_or_path", str(tiny_tokenizer_dir), "--output_dir",
            str(tmp_path / "out"), "--executor", "local", *[a.format(val=val) for a in extra]]
    assert message in run_recipe_error("pack", args, capsys)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # three datatrove runs (~3 s each)
def test_a_per_file_pack_mixes_sources_by_weight_in_whole_blocks(tmp_path, real_docs, tiny_tokenizer_dir, caplog):
    """Chinese (3 files) with 20 % English (2 files): the blocks pretraining reads are each source's shards' leading
    blocks, in the weights' shares to a block, the scarcer source whole, no block twice; index.json and stats.json say
    the realised shares. New weights or seed choose other blocks from the same shards: no task reruns."""
    import logging

    from llm_recipes.shards import load_packed

    caplog.set_level(logging.INFO, logger="pack")
    docs = [d for d in real_docs if d.strip()] * 2
    en = split_corpus(tmp_path / "en", [d for d in docs if d.isascii()], 2)
    zh = split_corpus(tmp_path / "zh", [d for d in docs if not d.isascii()], 3)
    val = split_corpus(tmp_path / "val", docs[:40], 1)

    def run(name, weights, seed="42"):
        config = tmp_path / f"{name}.yaml"
        config.write_text(json.dumps({"train_sources": [{"path": str(zh), "weight": weights[0]},
                                                        {"path": str(en), "weight": weights[1]}],
                                      "validation_sources": [str(val)]}))
        out = tmp_path / "out"
        return out, recipes.pack.main(["--config", str(config), "--tokenizer_name_or_path", str(tiny_tokenizer_dir),
                                       "--output_dir", str(out), "--work_dir", str(tmp_path / "work"), "--block_size",
                                       "64", "--executor", "local", "--tasks", "2", "--seed", seed])

    out, summary = run("mix", [0.8, 0.2])
    train, index = summary["splits"]["train"], json.loads((out / "index.json").read_text())["splits"]["train"]
    mixture = train["mixture"]
    assert [m["source"] for m in mixture] == [str(zh), str(en)] and [m["files"] for m in mixture] == [3, 2]
    used = sum(m["blocks"] for m in mixture)
    assert abs(mixture[0]["blocks"] - 0.8 * used) <= 1 and abs(mixture[1]["blocks"] - 0.2 * used) <= 1
    scarce = min((0, 1), key=lambda i: mixture[i]["available_tokens"] / mixture[i]["weight"])
    assert mixture[scarce]["tokens"] == mixture[scarce]["available_tokens"]  # the limiting source whole,
    assert mixture[1 - scarce]["tokens"] < 0.9 * mixture[1 - scarce]["available_tokens"]  # the other cut to match
    assert index["mixture"] == mixture and index["blocks"] == train["blocks"] == used < train["blocks_packed"]
    assert train["packed_tokens"] == used * 64
    logged = [r.getMessage() for r in caplog.records if r.name == "pack"]  # the default path's summary, and the shares
    assert f"train: {train['documents']} documents (0 empty skipped) -> {train['tokens']} tokens -> " \
           f"{train['blocks_packed']} blocks of 64, {train['dropped_tail_tokens']} tail tokens dropped" in logged
    assert f"  {zh}: weight 0.8 -> {mixture[0]['tokens']} tokens, share {mixture[0]['share']:.4f}" in logged

    blocks = load_packed(out)[0]["train"]
    assert len(blocks) == used
    rows, expected = np.stack([blocks[i]["input_ids"] for i in range(len(blocks))]), []
    for shard in index["shards"]:
        whole = np.fromfile(out / shard["file"], dtype=np.uint16).reshape(-1, 64)
        assert len(whole) == shard["blocks"] >= shard["used_blocks"]
        expected.append(whole[: shard["used_blocks"]])
    assert np.array_equal(rows, np.concatenate(expected))  # leading blocks, shard order: no block twice
    assert {s["source_index"] for s in index["shards"] if s["used_blocks"] < s["blocks"]} == {1 - scarce}

    shards = {p: p.stat().st_mtime_ns for p in (tmp_path / "work" / "shards").rglob("*.bin")}
    _, other = run("other", [0.5, 0.5])
    assert {p: p.stat().st_mtime_ns for p in shards} == shards  # the same shards: only the index step ran again
    shares = [m["share"] for m in other["splits"]["train"]["mixture"]]
    assert abs(shares[0] - 0.5) < 0.01 and other["splits"]["train"]["blocks"] != used
    _, reseeded = run("reseeded", [0.8, 0.2], seed="7")
    assert reseeded["splits"]["train"]["mixture"] == mixture  # the same counts from other shards' blocks
    assert json.loads((out / "index.json").read_text())["splits"]["train"]["shards"] != index["shards"]


@pytest.mark.slow  # two runs of a fork server and its tasks
def test_a_killed_per_file_pack_reruns_only_the_tasks_that_did_not_complete(tmp_path, real_docs, tiny_tokenizer_dir):
    """SIGKILL once the first of 2 tasks completed (they run one at a time): no output folder; the rerun leaves the
    completed task's shards as they were (not rewritten: their modification time, set back after the kill, stays) and
    writes the uninterrupted run's bytes."""
    import os
    import signal
    import subprocess
    import sys

    from testkit import REPO_ROOT, kill_when

    docs = [d for d in real_docs if d.strip()] * 3
    train, val = split_corpus(tmp_path / "train", docs, 4), split_corpus(tmp_path / "val", docs[:40], 1)
    args = ["--train_sources", str(train), "--validation_sources", str(val), "--tokenizer_name_or_path",
            str(tiny_tokenizer_dir), "--block_size", "64", "--executor", "local", "--tasks", "2", "--workers", "1"]
    baseline, out = tmp_path / "baseline", tmp_path / "killed"
    recipes.pack.main([*args, "--output_dir", str(baseline)])

    proc = warmproc.popen([sys.executable, str(REPO_ROOT / "recipes/pack.py"), *args, "--output_dir", str(out)],
                          cwd=REPO_ROOT, env={**os.environ}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          start_new_session=True)
    work = tmp_path / "killed_work"
    completions = work / "logs" / "pack" / "completions"
    kill_when(proc, lambda: completions.is_dir() and any(completions.iterdir()), timeout=300, group=True,
              what="the first completed task")
    assert proc.returncode == -signal.SIGKILL and not out.exists()
    (done,) = [int(p.name) for p in completions.iterdir()]
    units = json.loads((work / "plan.json").read_text())
    mine = [work / "shards" / f"{u['shard']}.bin" for u in units[done::2]]
    assert mine and all(p.is_file() for p in mine)
    for p in mine:
        os.utime(p, ns=(946684800 * 10**9, 946684800 * 10**9))  # 2000-01-01: a rewrite would set it to now

    recipes.pack.main([*args, "--output_dir", str(out)])
    assert shard_files(out) == shard_files(baseline)
    assert all(p.stat().st_mtime_ns == 946684800 * 10**9 for p in mine), "the completed task ran again"


def test_on_slurm_the_pack_array_then_the_index_job_are_submitted(tmp_path, real_docs, tiny_tokenizer_dir, fake_sbatch):
    import re

    train, val = split_corpus(tmp_path / "train", real_docs, 3), split_corpus(tmp_path / "val", real_docs[:20], 1)
    out = tmp_path / "out"
    assert recipes.pack.main(["--train_sources", str(train), "--validation_sources", str(val), "--tokenizer_name_or_path",
                              str(tiny_tokenizer_dir), "--output_dir", str(out), "--executor", "slurm",
                              "--slurm_partition", "cpu", "--tasks", "8", "--slurm_time", "00:30:00"]) is None
    calls = [json.loads(line) for line in fake_sbatch.read_text().splitlines()]
    jobs = {re.search(r"#SBATCH --job-name=(\S+)", c["script"]).group(1): c for c in calls
            if "launch_pickled_pipeline" in c["script"]}
    assert set(jobs) == {"pack", "pack_index"}, sorted(jobs)
    assert "#SBATCH --array=0-3" in jobs["pack"]["script"]  # 8 tasks asked, 4 files: 4 tasks
    assert "#SBATCH --partition=cpu" in jobs["pack"]["script"] and "#SBATCH --time=00:30:00" in jobs["pack"]["script"]
    assert "#SBATCH --array=0-0" in jobs["pack_index"]["script"]
    assert f"--dependency=afterok:{jobs['pack']['id']}" in jobs["pack_index"]["args"]
    assert not out.exists()  # nothing is published until the index job has run


@pytest.mark.slow  # datatrove's fork server and 2 task processes, ~3 s
def test_a_bad_line_in_a_task_is_named_by_file_and_line(tmp_path, real_docs, tiny_tokenizer_dir, capsys):
    """The tasks read the files (the driver does not read the corpus first): a task's bad input comes back as one line."""
    train, val = split_corpus(tmp_path / "train", real_docs, 2), split_corpus(tmp_path / "val", real_docs[:20], 1)
    with open(train / "00001.jsonl", "a", encoding="utf-8") as f:
        f.write('{"text": "fine"}\n{"text": broken\n')
    err = run_recipe_error("pack", ["--train_sources", str(train), "--validation_sources", str(val),
                                    "--tokenizer_name_or_path", str(tiny_tokenizer_dir), "--output_dir",
                                    str(tmp_path / "out"), "--executor", "local", "--tasks", "2"], capsys)
    lines = (len(real_docs) + 1) // 2 + 2
    assert f"00001.jsonl, line {lines}: invalid JSON" in err and not (tmp_path / "out").exists()


@pytest.mark.slow  # two runs of a fork server and its tasks
def test_a_changed_setting_repacks_instead_of_reusing_the_work_folder(tmp_path, real_docs, tiny_tokenizer_dir):
    from llm_recipes.shards import load_packed

    train, val = split_corpus(tmp_path / "train", real_docs, 2), split_corpus(tmp_path / "val", real_docs[:40], 1)
    for block_size in (64, 32):
        out, summary = pack(tmp_path, train, tiny_tokenizer_dir, "--validation_sources", str(val), "--executor",
                            "local", "--block_size", str(block_size))
        blocks, _ = load_packed(out)  # checks every shard's size against the index
        assert summary["splits"]["train"]["block_size"] == block_size == blocks["train"][0]["input_ids"].shape[0]
