"""`make pack` as datatrove tasks (executor local, ray or slurm): every input file becomes its own shard, whichever task
packs it, and one last step writes the index and publishes the folder.

    plan   the driver lists the files (train, then validation, each in sorted order) and saves the tokenizer it
           fingerprinted into the work folder
    pack   task r of N: files r, r+N, ... -> read (JSON Lines line by line, other formats through datasets' streaming
           reader; nothing cached), skip empty documents, encode + EOS and cut into blocks in groups of
           `pack_batch_size` documents (the single-node path's own functions) -> <work_dir>/shards/<split>/<file
           index>.bin written under a temporary name, then renamed, with its counts and sha256 beside it
    index  the driver (a last job under Slurm): shards in file order, linked into a staging folder with index.json
           and stats.json, renamed into output_dir; with a `weight` per train source, the blocks each source gives
           (mix_shards: whole blocks, as Megatron and nanotron blend datasets)

The shards depend on the files, never on the number of tasks, so 1, 2 or 4 tasks write the same bytes. A group never
spans two files: where each split is one file the blocks are the single-node path's blocks with `num_proc: 1`, in its
order. A killed run rerun skips the tasks that completed (datatrove's markers) and the index step always runs again.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
from datatrove.pipeline.base import PipelineStep

from llm_recipes.atomic import publish_dir
from llm_recipes.config import ConfigError
from llm_recipes.corpus import (BUILDERS, CorpusArguments, _is_nonempty, _to_text, check_local_file, checked_lines,
                                 resolve_files)
from llm_recipes.packing import encode_ids, mixture_budgets, split_stats, with_shares
from llm_recipes.shards import format_stats, write_index

PLAN = "plan.json"


def plan_files(corpus: CorpusArguments) -> list[dict]:
    """The corpus as one unit of work per local file, in the order the shards are indexed; one clear line for what a
    per-file pack cannot do."""
    if corpus.max_documents is not None:
        raise ConfigError("max_documents: quick runs pack with executor datasets (the default)")
    if not corpus.validation_sources and corpus.validation_split_size > 0:
        raise ConfigError("a per-file pack keeps every file whole: set validation_sources (make data writes a "
                          "validation split) or validation_split_size: 0")
    units, count = [], {"train": 0, "validation": 0}
    for split, sources in (("train", corpus.train_sources), ("validation", corpus.validation_sources)):
        for number, source in enumerate(sources):
            files = resolve_files(source)
            if files is None:
                raise ConfigError(f"source {source.path}: a Hub dataset; a per-file pack reads local files")
            for path in files:  # read by the tasks, which name a bad line: here only that each file has bytes
                if path.stat().st_size == 0:
                    raise ConfigError(f"{path}: empty file (no documents)")
                units.append({"split": split, "shard": f"{split}/{count[split]:05d}", "file": str(path),
                              "text_column": source.text_column, "sample_by": source.sample_by, "source": number})
                count[split] += 1
    if not any(u["split"] == "train" for u in units):
        raise ConfigError("train_sources is empty: list at least one source")
    return units


def work_fingerprint(corpus: CorpusArguments, args, tasks: int, units: list[dict], tokenizer_sha: str) -> str:
    """What decides the shards in the work folder: the files (size, time), the tokenizer, the packing settings and the
    task count (datatrove's completion markers are per task); not where or how fast the tasks run."""
    import dataclasses

    settings = {k: v for k, v in dataclasses.asdict(args).items() if k != "output_dir"}
    sources = dataclasses.asdict(corpus)  # weights and seed choose blocks at the index step: the shards stay
    sources.pop("seed")
    for source in sources["train_sources"]:
        source.pop("weight")
    files = [[u["file"], os.stat(u["file"]).st_size, os.stat(u["file"]).st_mtime_ns] for u in units]
    return json.dumps({"corpus": sources, "settings": settings, "tasks": tasks,
                       "tokenizer": tokenizer_sha, "files": files}, sort_keys=True, default=str)


def documents(unit: dict):
    """The unit's file as text documents, in file order, without a `datasets` cache: JSON Lines parsed line by line
    (a bad line named by file and line), other formats through datasets' streaming reader."""
    path, column = Path(unit["file"]), unit["text_column"]
    if path.suffix == ".jsonl":
        for lineno, row in checked_lines(path):
            if not isinstance(row, dict) or column not in row:
                raise ConfigError(f"{path}, line {lineno}: no field '{column}'; set text_column")
            yield _to_text(row, column)["text"]
        return
    import datasets

    check_local_file(path)
    builder = BUILDERS[path.suffix]
    kwargs = {"sample_by": unit["sample_by"]} if builder == "text" else {}
    if builder == "tsv":
        builder, kwargs = "csv", {"sep": "\t", "quoting": 3}
    stream = datasets.load_dataset(builder, data_files=[str(path)], split="train", streaming=True, **kwargs)
    for row in stream:
        if column not in row:
            raise ConfigError(f"{path}: no column '{column}' (columns: {', '.join(row)}); set text_column")
        yield _to_text(row, column)["text"]


def pack_file(unit: dict, tokenizer, block_size: int, group: int, dtype: np.dtype, out: Path) -> dict:
    """One file -> <out>/<shard>.bin (+ .json with its counts and sha256), written whole or not at all."""
    target = out / f"{unit['shard']}.bin"
    target.parent.mkdir(parents=True, exist_ok=True)
    stats = {"file": unit["file"], "documents": 0, "empty_documents_skipped": 0, "tokens": 0, "blocks": 0, "pads": 0}
    digest, texts = hashlib.sha256(), []
    with open(target.with_suffix(".tmp"), "wb") as f:
        def flush():  # the group's stream cut into blocks, its tail dropped: packing._pack without Arrow
            stream, _ = encode_ids(texts, tokenizer)
            blocks = len(stream) // block_size
            kept = stream[: blocks * block_size]
            data = kept.astype(dtype).tobytes()
            f.write(data)
            digest.update(data)
            stats["tokens"] += len(stream)
            stats["blocks"] += blocks
            if tokenizer.pad_token_id is not None:
                stats["pads"] += int((kept == tokenizer.pad_token_id).sum())
            texts.clear()

        for text in documents(unit):
            if not _is_nonempty({"text": [text]})[0]:
                stats["empty_documents_skipped"] += 1
                continue
            texts.append(text)
            stats["documents"] += 1
            if len(texts) == group:
                flush()
        if texts:
            flush()
    stats["sha256"] = digest.hexdigest()
    target.with_suffix(".tmp").rename(target)
    target.with_suffix(".json").write_text(json.dumps(stats) + "\n")
    return stats


class PackFiles(PipelineStep):
    """Task `rank` of `world_size` packs files rank, rank + world_size, ... of the plan, with the tokenizer the driver
    loaded and fingerprinted, saved in the work folder (<work_dir>/tokenizer.json: no transformers, no Hub on a worker,
    ~0.1 s where loading a 128k vocabulary through transformers takes seconds per task)."""

    type = "pack"
    name = "pack files"

    def __init__(self, work_dir: str, eos_token_id: int, pad_token_id: int | None, block_size: int,
                 pack_batch_size: int, dtype: str):
        super().__init__()
        self.work_dir, self.eos_token_id, self.pad_token_id = work_dir, eos_token_id, pad_token_id
        self.block_size, self.pack_batch_size, self.dtype = block_size, pack_batch_size, np.dtype(dtype)

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        from types import SimpleNamespace

        from tokenizers import Tokenizer

        backend = Tokenizer.from_file(str(Path(self.work_dir) / "tokenizer.json"))
        # The BPE / Unigram word cache (10,000 entries) keeps whole documents where the pre-tokenizer does not split
        # them (Llama 2's Metaspace): ~90 MiB a task, and a worker process that runs several tasks kept each one's.
        # Off, a task's memory stays flat with the files it packs, at the same speed (Llama 2 and Llama 3 measured).
        if hasattr(backend.model, "_resize_cache"):
            backend.model._resize_cache(0)
        tokenizer = SimpleNamespace(backend_tokenizer=backend, eos_token_id=self.eos_token_id,
                                    pad_token_id=self.pad_token_id)
        units = json.loads((Path(self.work_dir) / PLAN).read_text())
        for unit in units[rank::world_size]:
            try:
                stats = pack_file(unit, tokenizer, self.block_size, self.pack_batch_size, self.dtype,
                                  Path(self.work_dir) / "shards")
            except ConfigError as e:  # bad input: the driver reports this line, not "task 3 failed, see its log"
                errors = Path(self.work_dir) / "errors"
                errors.mkdir(exist_ok=True)
                (errors / f"{rank:05d}.txt").write_text(str(e))
                raise
            self.stat_update("documents", value=stats["documents"])
            self.stat_update("blocks", value=stats["blocks"])
        return
        yield


def mix_shards(shards: list[dict], sources: list[str], weights: list[float], seed: int, block_size: int) -> list[dict]:
    """A weighted mixture of whole blocks, as Megatron and nanotron blend datasets: each source gets `weight`
    (normalised) of the blocks, the mixture as large as it can be without repeating a block (mixture_budgets, the
    default path's rule). A source's shards are taken in a seeded order, whole, and the last one as a prefix: each
    shard entry gets `used_blocks`. Returns, per source, the blocks and tokens taken, those available and the
    realised share."""
    available = np.zeros(len(weights), dtype=np.int64)
    for shard in shards:
        available[shard["source_index"]] += shard["blocks"]
    rng, report = np.random.default_rng(seed), []
    for i, budget in enumerate(mixture_budgets(available, weights)):
        budget = min(int(available[i]), int(budget + 1e-6))
        own = [shard for shard in shards if shard["source_index"] == i]
        for k in rng.permutation(len(own)):
            own[k]["used_blocks"] = min(budget, own[k]["blocks"])
            budget -= own[k]["used_blocks"]
        taken = sum(shard["used_blocks"] for shard in own)
        report.append({"source": sources[i], "weight": float(weights[i]), "files": len(own), "blocks": taken,
                       "tokens": taken * block_size, "available_tokens": int(available[i]) * block_size})
    return with_shares(report)


def publish_index(work_dir: Path, output_dir: str, block_size: int, dtype: str, tokenizer_info: dict,
                  run_configs: tuple) -> dict:
    """Shards in plan order, hard-linked (copied across file systems) into a staging folder with index.json and
    stats.json, renamed into output_dir; a weighted corpus (run_configs[0]) gets its train blocks mixed by mix_shards.
    Returns stats.json's content."""
    from llm_recipes.run_info import write_run_info

    work_dir, dtype = Path(work_dir), np.dtype(dtype)
    units = json.loads((work_dir / PLAN).read_text())
    per_split: dict[str, dict] = {}
    with publish_dir(output_dir) as staging:
        for unit in units:
            counts = json.loads((work_dir / "shards" / f"{unit['shard']}.json").read_text())
            source, target = work_dir / "shards" / f"{unit['shard']}.bin", staging / f"{unit['shard']}.bin"
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(source, target)
            except OSError:
                import shutil

                shutil.copyfile(source, target)
            split = per_split.setdefault(unit["split"], {"shards": [], "documents": 0, "empty_documents_skipped": 0,
                                                         "tokens": 0, "blocks": 0, "pads": 0})
            split["shards"].append({"file": f"{unit['shard']}.bin", "blocks": counts["blocks"],
                                    "sha256": counts["sha256"], "source": unit["file"],
                                    "source_index": unit["source"]})
            for key in ("documents", "empty_documents_skipped", "tokens", "blocks", "pads"):
                split[key] += counts[key]
        splits = {name: split_stats(s["documents"], s["empty_documents_skipped"], s["tokens"], s["blocks"],
                                    block_size, s["pads"]) for name, s in per_split.items()}
        index = {name: {"shards": s["shards"], "blocks": s["blocks"]} for name, s in per_split.items()}
        corpus = run_configs[0]
        if corpus.weighted:  # the split's counts describe what was packed; blocks and packed_tokens what is read
            train = per_split["train"]
            mixture = mix_shards(train["shards"], [s.path for s in corpus.train_sources],
                                 [s.weight for s in corpus.train_sources], corpus.seed, block_size)
            used = sum(m["blocks"] for m in mixture)
            index["train"].update(blocks=used, mixture=mixture)
            splits["train"].update(blocks=used, packed_tokens=used * block_size, blocks_packed=train["blocks"],
                                   mixture=mixture)
        write_index(staging, dtype, block_size, tokenizer_info, index)
        stats = {"splits": splits, "tokenizer": tokenizer_info, "format": format_stats("shards", dtype)}
        (staging / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
        write_run_info(staging, *run_configs, recipe="pack")
    return stats


class PublishIndex(PipelineStep):
    """The index step as a datatrove step, for Slurm, where it runs as the last job of the chain."""

    type = "pack"
    name = "index"

    def __init__(self, **kwargs):
        super().__init__()
        self.kwargs = kwargs

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        publish_index(**self.kwargs)
        return
        yield


def pack_with_executor(corpus: CorpusArguments, args, ex, tokenizer, tokenizer_info: dict) -> dict | None:
    """The whole per-file pack: plan, work folder (kept for a rerun only when nothing that decides the shards
    changed), the tasks, then the index. Returns stats.json's content (None under Slurm: the jobs were submitted)."""
    import shutil

    from llm_recipes import executors
    from llm_recipes.shards import shard_dtype

    units = plan_files(corpus)
    tasks = min(ex.tasks, len(units))
    work = Path(ex.work_dir or args.output_dir.rstrip("/") + "_work")
    stamp, wanted = work / "fingerprint.json", work_fingerprint(corpus, args, tasks, units, tokenizer_info["sha256"])
    if work.exists() and (not stamp.exists() or stamp.read_text() != wanted):
        shutil.rmtree(work)  # other files, tokenizer or settings: the old shards and task markers do not apply
    work.mkdir(parents=True, exist_ok=True)
    stamp.write_text(wanted)
    (work / PLAN).write_text(json.dumps(units, indent=1) + "\n")
    tokenizer.backend_tokenizer.save(str(work / "tokenizer.json"))
    dtype = shard_dtype(len(tokenizer)).name
    pack = PackFiles(str(work), tokenizer.eos_token_id, tokenizer.pad_token_id, args.block_size, args.pack_batch_size,
                     dtype)
    index = {"work_dir": str(work), "output_dir": args.output_dir, "block_size": args.block_size, "dtype": dtype,
             "tokenizer_info": tokenizer_info, "run_configs": (corpus, args, ex)}
    logs = work / "logs"
    if ex.executor == "slurm":
        first = executors.make_executor(ex, [pack], tasks, str(logs / "pack"), "pack",
                                        slurm_logs=str(logs / "slurm" / "pack"))
        executors.make_executor(ex, [PublishIndex(**index)], 1, str(logs / "index"), "pack_index", depends=first,
                                slurm_logs=str(logs / "slurm" / "index")).run()
        return None
    if ex.executor == "ray":
        executors.init_ray(ex)
    shutil.rmtree(work / "errors", ignore_errors=True)
    executor = executors.make_executor(ex, [pack], tasks, str(logs / "pack"), "pack", preload=__name__)
    try:
        executors.run_stage(executor, tasks, "pack", str(logs / "pack"))
    except executors.StageFailed as e:
        errors = sorted((work / "errors").glob("*.txt"))
        raise ConfigError(errors[0].read_text() if errors else str(e)) from None
    return publish_index(**index)
