"""data_prep speed vs datatrove's stock steps, on the same corpus, in one command.

    .venv/bin/python benchmarks/data_prep_bench.py              # shipped text + Linux kernel docs (apt-get download)
    .venv/bin/python benchmarks/data_prep_bench.py --skip_large # shipped text only

1. Filters: our gopher_repetition + gopher_quality + c4_quality vs datatrove's GopherRepetitionFilter +
   GopherQualityFilter + C4QualityFilter (spaCy words), same documents, same order, one core; documents/s and the share
   of documents with the same decision (kept/dropped, reason, resulting text).
2. Near-dedup: our signatures -> buckets -> clusters (rensa MinHash, vectorised merge) vs datatrove's MinhashDedupSignature -> Buckets ->
   Cluster -> Filter chain, both FineWeb settings (5-grams, 14 x 8), on the corpus plus planted near-copies of real
   documents (new header and footer / 1 % of words changed / last 5 % cut); seconds and recall on the planted copies.
3. Ray: the whole English pipeline (`python -m data_prep`, executor ray, 4 tasks) with 2 workers vs 1.
The large corpus: Debian's linux-doc-6.1 (the kernel's reStructuredText docs, ~25 MB of text), cut at blank lines into
documents of about 3,000 characters. Built once into outputs/bench/data_prep/.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import random
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("DATA_DIR", REPO.parent / "shared" / "data"))


def shipped_texts() -> list[str]:
    texts = [json.loads(line)["text"] for line in (DATA / "c4_demo" / "c4_demo.jsonl").open(encoding="utf-8")]
    for name in ("valid.txt", "test.txt"):
        texts += [line.strip() for line in (DATA / "wikitext2" / name).open(encoding="utf-8") if line.strip()]
    shakespeare = (DATA / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
    texts += [p for p in shakespeare.split("\n\n") if p.strip()]
    return texts


def kernel_docs(cache: Path) -> list[str]:
    """Kernel documentation from Debian's linux-doc-6.1 package, in ~3,000-character documents."""
    out = cache / "linux_doc.jsonl.gz"
    if not out.exists():
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(["apt-get", "download", "linux-doc-6.1"], cwd=tmp, check=True, capture_output=True)
            deb = next(Path(tmp).glob("linux-doc-6.1_*.deb"))
            subprocess.run(["dpkg-deb", "-x", str(deb), f"{tmp}/x"], check=True)
            docs = []
            for path in sorted(Path(tmp, "x").rglob("_sources/**/*.rst.txt")):
                chunk: list[str] = []
                for para in path.read_text(encoding="utf-8", errors="replace").split("\n\n"):
                    chunk.append(para)
                    if sum(map(len, chunk)) >= 3000:
                        docs.append("\n\n".join(chunk))
                        chunk = []
                if chunk:
                    docs.append("\n\n".join(chunk))
        cache.mkdir(parents=True, exist_ok=True)
        with gzip.open(out, "wt", encoding="utf-8") as f:
            for d in docs:
                if d.strip():
                        f.write(json.dumps({"text": d}) + "\n")
    with gzip.open(out, "rt", encoding="utf-8") as f:
        return [t for t in (json.loads(line)["text"] for line in f) if t.strip()]


def bench_filters(texts: list[str]) -> dict:
    from datatrove.data import Document
    from datatrove.pipeline.filters import C4QualityFilter, GopherQualityFilter, GopherRepetitionFilter

    from data_prep.steps import STEPS

    stock = [GopherRepetitionFilter(), GopherQualityFilter(), C4QualityFilter()]
    ours = [STEPS[n](STEPS[n].Params()) for n in ("gopher_repetition", "gopher_quality", "c4_quality")]

    def run_stock(text):
        doc = Document(text=text, id="x")
        for f in stock:
            r = f.filter(doc)
            if r is not True:
                return (False, r[1] if isinstance(r, tuple) else "dropped", None)
        return (True, None, doc.text)

    def run_ours(text):
        doc = Document(text=text, id="x", metadata={"language": "en"})
        for s in ours:
            r = s.process(doc)
            if r is not None:
                return (False, r, None)
        return (True, None, doc.text)

    for t in texts[:20]:  # load spaCy / warm caches outside the timing
        run_stock(t), run_ours(t)
    t0 = time.perf_counter()
    theirs_out = [run_stock(t) for t in texts]
    t1 = time.perf_counter()
    ours_out = [run_ours(t) for t in texts]
    t2 = time.perf_counter()
    same = sum(a == b for a, b in zip(theirs_out, ours_out))
    same_keep = sum(a[0] == b[0] for a, b in zip(theirs_out, ours_out))
    return {"docs": len(texts), "stock_docs_s": len(texts) / (t1 - t0), "ours_docs_s": len(texts) / (t2 - t1),
            "same_decision": same / len(texts), "same_keep_drop": same_keep / len(texts),
            "kept": sum(o[0] for o in ours_out)}


def near_copy(text: str, rng: random.Random, kind: int) -> str:
    """A planted near-copy: 0 = new header and footer, 1 = about 1 word in 100 changed, 2 = the last 5 % cut."""
    words = text.split(" ")
    if kind % 3 == 0:
        return "Home | Docs | Contact\n" + text + "\nShare this page."
    if kind % 3 == 1:
        for _ in range(max(1, len(words) // 100)):
            words[rng.randrange(len(words))] = rng.choice(["the", "a", "new", "2019", "more"])
        return " ".join(words)
    return " ".join(words[: int(len(words) * 0.95)])


def plant(texts: list[str], n: int, seed: int = 0) -> tuple[list[str], dict[int, int]]:
    """Corpus + n near-copies of real documents; returns texts and {copy index: original index}."""
    rng = random.Random(seed)
    candidates = [i for i, t in enumerate(texts) if len(t.split()) >= 150]
    originals = rng.sample(candidates, min(n, len(candidates)))
    out, planted = list(texts), {}
    for k, i in enumerate(originals):
        planted[len(out)] = i
        out.append(near_copy(texts[i], rng, k))
    return out, planted


def bench_dedup(texts: list[str], planted: dict[int, int]) -> dict:
    from datatrove.data import Document
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )

    from data_prep.dedup import DedupBuckets, DedupClusters, DedupSignatures, MinhashParams, bucket_names

    def docs():
        return (Document(text=t, id=str(i), metadata={"order": [0, 0, i], "language": "en"}) for i, t in enumerate(texts))

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        for _ in DedupSignatures(f"{tmp}/ours_sig", exact=False, minhash=MinhashParams()).run(docs()):
            pass
        list(DedupBuckets(f"{tmp}/ours_sig", f"{tmp}/ours_pairs", bucket_names(False, MinhashParams())).run())
        list(DedupClusters(f"{tmp}/ours_sig", f"{tmp}/ours_pairs", f"{tmp}/ours_removed").run())
        t1 = time.perf_counter()
        ours_removed = {int(json.loads(line)["id"]) for p in Path(tmp, "ours_removed").glob("*.jsonl") for line in open(p)}

        cfg = MinhashConfig()  # FineWeb: 5-grams, 14 buckets x 8 hashes, 64-bit xxhash
        list(MinhashDedupSignature(f"{tmp}/sig", config=cfg).run(docs()) or [])
        for b in range(cfg.num_buckets):
            list(MinhashDedupBuckets(f"{tmp}/sig", f"{tmp}/buckets", config=cfg).run(None, b, cfg.num_buckets) or [])
        list(MinhashDedupCluster(f"{tmp}/buckets", f"{tmp}/remove", config=cfg).run(None, 0, 1) or [])
        kept = {int(d.id) for d in MinhashDedupFilter(f"{tmp}/remove").run(docs())}
        t2 = time.perf_counter()
    theirs_removed = set(range(len(texts))) - kept

    def recall(removed):  # a planted copy is found when it, or its original, is removed
        return sum(c in removed or o in removed for c, o in planted.items()) / len(planted)

    return {"docs": len(texts), "planted": len(planted), "ours_s": t1 - t0, "stock_s": t2 - t1,
            "ours_recall": recall(ours_removed), "stock_recall": recall(theirs_removed),
            "ours_removed": len(ours_removed), "stock_removed": len(theirs_removed)}


def bench_ray(texts: list[str], work: Path) -> dict:
    import ray

    from data_prep.cli import main

    corpus = work / "ray_corpus.jsonl"
    with open(corpus, "w", encoding="utf-8") as f:
        for t in texts:
            f.write(json.dumps({"text": t}) + "\n")
    config = work / "ray.yaml"
    config.write_text(f"""sources: [{{path: "{corpus}", label: corpus, language: en}}]
steps:
  - {{step: fix_unicode}}
  - {{step: normalize}}
  - {{step: language_id, keep: {{en: 0.5}}, candidates: [en, de, fr, es]}}
  - {{step: gopher_repetition}}
  - {{step: gopher_quality}}
  - {{step: c4_quality}}
  - {{step: fineweb_quality}}
  - {{step: pii}}
  - {{step: dedup_exact}}
  - {{step: dedup_minhash}}
executor: ray
tasks: 4
""")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    times = {}
    try:
        for workers in (1, 2):
            out = work / f"ray_w{workers}"
            shutil.rmtree(out, ignore_errors=True)
            shutil.rmtree(f"{out}_work", ignore_errors=True)
            t0 = time.perf_counter()
            main(["--config", str(config), "--output_dir", str(out), "--workers", str(workers)])
            times[workers] = time.perf_counter() - t0
    finally:
        ray.shutdown()
    same = all((work / "ray_w1" / p.relative_to(work / "ray_w2")).read_bytes() == p.read_bytes()
               for p in (work / "ray_w2").glob("*/*.jsonl"))
    return {"docs": len(texts), "w1_s": times[1], "w2_s": times[2], "same_output": same}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip_large", action="store_true", help="shipped text only (no apt-get download)")
    parser.add_argument("--skip_ray", action="store_true")
    parser.add_argument("--planted", type=int, default=600, help="near-copies planted for the dedup benchmark")
    parser.add_argument("--work_dir", default=str(REPO / "outputs" / "bench" / "data_prep"))
    parser.add_argument("--tiny", action="store_true", help="seconds: 400 shipped documents, 20 planted copies, "
                                                            "no Ray (the tests)")
    args = parser.parse_args()
    if args.tiny:
        args.skip_large, args.skip_ray, args.planted = True, True, 20
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    texts = shipped_texts()[:400 if args.tiny else None]
    if not args.skip_large:
        texts += kernel_docs(work)
    chars = sum(map(len, texts))
    print(f"corpus: {len(texts):,} documents, {chars / 1e6:.1f} M characters; {platform.machine()}, "
          f"{os.cpu_count()} cores")
    results = {"corpus_docs": len(texts), "corpus_chars": chars}
    f = bench_filters(texts)
    results["filters"] = f
    print(f"filters: ours {f['ours_docs_s']:,.0f} docs/s vs datatrove {f['stock_docs_s']:,.0f} docs/s = "
          f"{f['ours_docs_s'] / f['stock_docs_s']:.2f}x; same decision {f['same_decision']:.2%} "
          f"(same keep/drop {f['same_keep_drop']:.2%})")
    corpus, planted = plant(texts, args.planted)
    d = bench_dedup(corpus, planted)
    results["dedup"] = d
    print(f"near-dedup: ours {d['ours_s']:.1f} s vs datatrove chain {d['stock_s']:.1f} s = "
          f"{d['stock_s'] / d['ours_s']:.2f}x; recall on {d['planted']} planted copies: ours {d['ours_recall']:.1%}, "
          f"datatrove {d['stock_recall']:.1%}; removed: ours {d['ours_removed']}, datatrove {d['stock_removed']}")
    if not args.skip_ray:
        r = bench_ray(texts, work)
        results["ray"] = r
        print(f"ray: 1 worker {r['w1_s']:.1f} s, 2 workers {r['w2_s']:.1f} s = {r['w1_s'] / r['w2_s']:.2f}x; "
              f"same output: {r['same_output']}")
    print(f"ratio ours/datatrove: filters {f['ours_docs_s'] / f['stock_docs_s']:.2f}x docs/s, near-dedup "
          f"{d['stock_s'] / d['ours_s']:.2f}x faster" + (f"; Ray 2/1 workers {r['w1_s'] / r['w2_s']:.2f}x"
                                                         if not args.skip_ray else ""))
    (work / "results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
