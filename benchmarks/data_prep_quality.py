"""What the quality rules drop from text they were not tuned on, per preset, in one command.

    .venv/bin/python benchmarks/data_prep_quality.py            # ~2 min on 2 cores

One corpus, run through `python -m data_prep` with the steps of each preset (its sources replaced):
  clean_en  300 English Wikipedia extracts, one per line (tests/data_prep/fixtures/clean_text, CC BY-SA; SOURCES.md)
  clean_zh  300 Chinese Wikipedia paragraphs from CMRC 2018 (same folder)
  c4        the shipped C4 sample (real web text with its boilerplate)
  spam      240 pages of known junk built from the C4 sample: keyword stuffing, link lists, cookie/login boilerplate,
            lorem ipsum, script pages, repeated paragraphs, price lists, stop-word-free keyword lines
  copies    150 near-copies of C4 documents (new header and footer / 1 % of words changed / last 5 % cut)
Presets: configs/data/tiny.yaml (the demo's), configs/data/web.yaml, and "fineweb": web.yaml with its four departures
from FineWeb's published settings undone (the baseline the departures are measured against).
Printed per preset: false-drop rate on clean_en / clean_zh with the rules that dropped them, the share of c4 dropped,
spam recall (share of spam pages not in the output) and dedup recall (share of copies not in the output).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import tempfile
from pathlib import Path

import yaml
from data_prep_bench import near_copy

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("DATA_DIR", REPO.parent / "shared" / "data"))
CLEAN = REPO / "tests" / "data_prep" / "fixtures" / "clean_text"
# web.yaml's departures from FineWeb's published settings, and the published values they replace.
FINEWEB_DEFAULTS = {
    "gopher_quality": {"alpha_ratio_counts_punctuation": True, "min_lines": 1},
    "c4_quality": {"min_num_sentences": 5},
    "fineweb_quality": {"min_lines": 1},
    "zh_quality": {"min_lines": 1},
    "language_id": {"ja_min_kana_share": None},
}
BOILERPLATE = ["We use cookies to improve your experience.", "Accept all cookies", "Privacy Policy", "Terms of Use",
               "Log in", "Sign up for our newsletter", "Share on Facebook", "Share on Twitter", "Read more",
               "Click here to subscribe", "Copyright 2019 All rights reserved", "Skip to main content", "Home"]
SCRIPT = "var settings = { autoplay: true, delay: 3000 };\nfunction init() { slider.start(settings); }"


def _texts(path: Path) -> list[str]:
    return [json.loads(line)["text"] for line in path.open(encoding="utf-8")]


def spam_pages(c4: list[str], n_each: int = 30, seed: int = 0) -> list[str]:
    """Eight kinds of junk page, each made from real C4 text so only its junk shape differs from clean text."""
    rng = random.Random(seed)
    pages = []
    for k in range(n_each):
        doc = c4[rng.randrange(len(c4))]
        words = doc.split()
        first = " ".join(words[:60])
        phrase = " ".join(words[10:16])
        pages.append(first + "\n" + ", ".join([phrase] * 25))                                      # keyword stuffing
        pages.append("\n".join(" ".join(c4[rng.randrange(len(c4))].split()[:5]) + " | News" for _ in range(40)))
        pages.append("\n".join(rng.choice(BOILERPLATE) for _ in range(40)))                        # boilerplate
        pages.append(doc + "\nLorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.")
        pages.append(doc + "\n" + SCRIPT)                                                          # script page
        paragraphs = doc.split("\n")
        pages.append("\n\n".join(paragraphs * 3))                                                  # repeated page
        pages.append("\n".join(f"SKU {rng.randrange(10**5)} - {' '.join(rng.sample(words, 2))} - $"
                               f"{rng.randrange(5, 500)}.99 - {rng.randrange(1, 40)} in stock" for _ in range(30)))
        content = [w for w in words if w.lower() not in {"the", "be", "to", "of", "and", "that", "have", "with"}]
        pages.append(" ".join(rng.sample(content, min(80, len(content)))))                         # keyword line
    return pages


def near_copies(c4: list[str], n: int = 150, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    originals = rng.sample([t for t in c4 if len(t.split()) >= 150], n)
    return [near_copy(text, rng, k) for k, text in enumerate(originals)]


def run_preset(name: str, steps: list, sources: list[dict], work: Path) -> dict:
    from data_prep.cli import main

    config = {"sources": sources, "steps": steps, "tasks": 2, "validation_size": 0.0, "test_size": 0.0,
              "output_dir": str(work / name)}
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True))
    out = main(["--config", str(path)])
    return json.loads((out / "report.json").read_text())


def summarise(report: dict) -> dict:
    result = {}
    for label, source in report["sources_funnel"].items():
        read = source["records_read"]
        rules = {f"{step}:{reason}": v["documents"] for step, s in source["steps"].items()
                 for reason, v in s["drops"].items()}
        result[label] = {"read": read, "dropped": read - source["documents_out"],
                         "share": (read - source["documents_out"]) / read,
                         "rules": dict(sorted(rules.items(), key=lambda kv: -kv[1]))}
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work_dir", default=None, help="keep the runs here (default: a temporary folder)")
    parser.add_argument("--tiny", action="store_true", help="seconds: 30 documents of each source (the tests)")
    args = parser.parse_args()
    c4 = _texts(DATA / "c4_demo" / "c4_demo.jsonl")
    keep = 30 if args.tiny else None
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work_dir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        corpus = {"c4": c4, "clean_en": _texts(CLEAN / "en_encyclopedia.jsonl"),
                  "clean_zh": _texts(CLEAN / "zh_encyclopedia.jsonl"), "spam": spam_pages(c4),
                  "copies": near_copies(c4)}
        for label, texts in corpus.items():
            with open(work / f"{label}.jsonl", "w", encoding="utf-8") as f:
                f.writelines(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts[:keep])
        sources = [{"path": str(work / f"{label}.jsonl"), "label": label} for label in corpus]
        web = yaml.safe_load((REPO / "configs/data/web.yaml").read_text())["steps"]
        fineweb = copy.deepcopy(web)
        for step in fineweb:
            step.update(FINEWEB_DEFAULTS.get(step["step"], {}))
        presets = {"tiny": yaml.safe_load((REPO / "configs/data/tiny.yaml").read_text())["steps"],
                   "fineweb": fineweb, "web": web}
        results = {name: summarise(run_preset(name, steps, sources, work)) for name, steps in presets.items()}
    print("\npreset   | clean_en dropped | clean_zh dropped | c4 dropped | spam recall | dedup recall")
    for name, r in results.items():
        print(f"{name:8} | {r['clean_en']['share']:15.1%}  | {r['clean_zh']['share']:15.1%}  | "
              f"{r['c4']['share']:9.1%}  | {r['spam']['share']:10.1%}  | {r['copies']['share']:11.1%}")
    for name, r in results.items():
        for label in ("clean_en", "clean_zh"):
            print(f"{name} {label}: {r[label]['dropped']}/{r[label]['read']} dropped; {r[label]['rules']}")
        print(f"{name} spam kept: {r['spam']['read'] - r['spam']['dropped']}; c4 rules: {r['c4']['rules']}")
    print(json.dumps(results))
    for label in ("clean_en", "clean_zh"):
        fineweb, web = results["fineweb"][label]["dropped"], results["web"][label]["dropped"]
        print(f"ratio false drops FineWeb's settings/web.yaml, {label}: "
              + (f"{fineweb / web:.1f}x" if web else f"n/a (web.yaml dropped none, FineWeb's {fineweb})")
              + f" ({fineweb} vs {web} of {results['web'][label]['read']})")


if __name__ == "__main__":
    main()
