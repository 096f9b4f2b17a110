"""Continued pretraining on Chinese with and without vocabulary extension, and document-masked packing, on tiny models.

    python benchmarks/continued_pretraining.py            (~10 min on 2 CPU cores)

1. An English-only world: a byte-level BPE and a tiny model pretrained on the shipped English text only.
2. Continued pretraining on the shipped Chinese text with 20 % English replayed (`weight` in the pack config), the
   same token budget for both arms: (a) with the tokenizer extended by recipes/extend_tokenizer.py (embeddings grown,
   new rows the mean of their pieces), (b) with the English tokenizer as it is. Reported: Chinese and English bits per
   byte on held-out text (documents scored alone; bits per byte compares tokenizers fairly), before and after, and the
   token count of the Chinese training corpus under each tokenizer.
3. Document masking: the same from-scratch English run with and without `document_masking`, over seeds; held-out
   English bits per byte, each document scored alone (as it is met at inference).

Every step is the recipes themselves (pack, pretrain, extend_tokenizer) with the tiny YAML presets, overridden for
paths and lengths only. Held-out documents are split off before anything trains or is tokenized.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import datasets
import torch
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from llm_recipes.corpus import CorpusArguments, load_corpus  # noqa: E402
from llm_recipes.evaluation.scoring import language_modeling  # noqa: E402
from llm_recipes.tokenizer import train_bpe, wrap  # noqa: E402
from recipes import extend_tokenizer, pack, pretrain  # noqa: E402

DATA = Path(os.environ.get("DATA_DIR", REPO.parent / "shared" / "data"))
EN = [{"path": "wikitext2/valid.txt", "sample_by": "line"}, {"path": "tinyshakespeare/input.txt",
                                                             "sample_by": "paragraph"}, {"path": "c4_demo/c4_demo.jsonl"}]
ZH = [{"path": "chnsenticorp/ChnSentiCorp_htl_all.csv", "text_column": "review"},
      {"path": "chinese_poetry/ci.song.0.json", "text_column": "paragraphs"},
      {"path": "chinese_poetry/lunyu.json", "text_column": "paragraphs"},
      {"path": "alpaca_zh_demo/alpaca_zh_demo.json", "text_column": "output"}]


def split_to_files(specs: list[dict], work: Path, name: str, limit: int | None = None) -> tuple[Path, Path]:
    splits, _ = load_corpus(CorpusArguments(train_sources=[{**s, "path": str(DATA / s["path"])} for s in specs],
                                            validation_split_size=0.1, seed=0))
    paths = []
    for split in ("train", "validation"):
        path = work / f"{name}-{split}.jsonl"
        with open(path, "w", encoding="utf-8") as f:
            for text in splits[split]["text"][:limit]:
                f.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
        paths.append(path)
    return paths[0], paths[1]


def run_pack(work: Path, name: str, tokenizer: Path, sources: list[dict], block: int) -> Path:
    config = work / f"pack-{name}.yaml"
    config.write_text(yaml.safe_dump({"train_sources": sources, "validation_split_size": 0.02}))
    pack.main(["--config", str(config), "--tokenizer_name_or_path", str(tokenizer), "--output_dir",
               str(work / f"packed-{name}"), "--block_size", str(block), "--num_proc", "2"])
    return work / f"packed-{name}"


def bits_per_byte(model_dir: Path, texts: list[str]) -> float:
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    with torch.no_grad():
        return language_modeling(model, tokenizer, texts, model.config.max_position_embeddings, 256, 16,
                                 tokenizer.eos_token_id, "bpb")["bits_per_byte"]


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("--base_steps", type=int, default=400)
    cli.add_argument("--continue_tokens", type=int, default=600_000)
    cli.add_argument("--masking_steps", type=int, default=300)
    cli.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    cli.add_argument("--block_size", type=int, default=128)
    cli.add_argument("--held_out", type=int, default=300, help="held-out documents scored per language")
    cli.add_argument("--max_documents", type=int, default=None, help="documents kept per language and split")
    cli.add_argument("--tiny", action="store_true", help="seconds: 600 documents per language, 3 steps per run, "
                                                         "1 seed, 10 held-out documents, 64-token blocks (the tests)")
    args = cli.parse_args()
    if args.tiny:
        args.base_steps, args.continue_tokens, args.masking_steps, args.seeds = 3, 3 * 16 * 64, 3, [1]
        args.block_size, args.held_out, args.max_documents = 64, 10, 600
    datasets.disable_progress_bars()
    common = ["--report_to", "none", "--save_strategy", "no", "--eval_strategy", "no", "--logging_steps", "50"]

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        en_train, en_test = split_to_files(EN, work, "en", args.max_documents)
        zh_train, zh_test = split_to_files(ZH, work, "zh", args.max_documents)
        en_held = [json.loads(l)["text"] for l in en_test.read_text(encoding="utf-8").splitlines()][:args.held_out]
        zh_held = [json.loads(l)["text"] for l in zh_test.read_text(encoding="utf-8").splitlines()][:args.held_out]

        # 1. the English-only world
        english, _ = load_corpus(CorpusArguments(train_sources=[str(en_train)]))
        base_tok = work / "tok-en"
        wrap(train_bpe((b["text"] for b in english["train"].iter(1000)), 2048, 2, len(english["train"])),
             1024).save_pretrained(base_tok)
        packed_en = run_pack(work, "en", base_tok, [{"path": str(en_train)}], args.block_size)
        base = work / "model-en"
        pretrain.main(["--config", str(REPO / "configs/pretrain/tiny.yaml"), "--dataset_path", str(packed_en),
                       "--output_dir", str(base), "--max_steps", str(args.base_steps), *common])

        # 2. continued pretraining on Chinese + 20 % English, with and without the extension
        ext_tok = work / "tok-ext"
        (work / "extend.yaml").write_text(yaml.safe_dump({"train_sources": [str(zh_train)],
                                                          "validation_sources": [str(zh_test), str(en_test)]}))
        extend_tokenizer.main(["--config", str(work / "extend.yaml"), "--base_tokenizer_name_or_path", str(base_tok),
                               "--output_dir", str(ext_tok), "--vocab_size", "4000"])
        mixture = [{"path": str(zh_train), "weight": 0.8}, {"path": str(en_train), "weight": 0.2}]
        rows, corpus_tokens = {}, {}
        for arm, tok in (("extended", ext_tok), ("English tokenizer", base_tok)):
            packed = run_pack(work, arm.split()[0], tok, mixture, args.block_size)
            stats = json.loads((packed / "stats.json").read_text())["splits"]["train"]["mixture"]
            zh_ids = AutoTokenizer.from_pretrained(tok)([json.loads(l)["text"] for l in zh_train.read_text(
                encoding="utf-8").splitlines()], add_special_tokens=False)["input_ids"]
            corpus_tokens[arm] = sum(map(len, zh_ids))
            out = work / f"continued-{arm.split()[0]}"
            pretrain.main(["--config", str(REPO / "configs/pretrain/tiny_continue.yaml"), "--model_name_or_path",
                           str(base), "--dataset_path", str(packed), "--output_dir", str(out), "--max_tokens",
                           str(args.continue_tokens), "--eval_on_start", "false", *common])
            rows[arm] = (bits_per_byte(out, zh_held), bits_per_byte(out, en_held), stats)
        before = (bits_per_byte(base, zh_held), bits_per_byte(base, en_held))

        # 3. document masking from scratch
        masking = {True: [], False: []}
        for seed in args.seeds:
            for switch in (True, False):
                out = work / f"mask-{switch}-{seed}"
                pretrain.main(["--config", str(REPO / "configs/pretrain/tiny.yaml"), "--dataset_path", str(packed_en),
                               "--output_dir", str(out), "--max_steps", str(args.masking_steps), "--seed", str(seed),
                               "--document_masking", str(switch).lower(), *common])
                masking[switch].append(bits_per_byte(out, en_held))
                print(f"document_masking {switch} seed {seed}: English bpb {masking[switch][-1]:.4f}", flush=True)

    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores; tiny preset, blocks of {args.block_size}; English "
          f"base {args.base_steps} steps; continued {args.continue_tokens:,} tokens (zh 0.8 / en 0.2); held-out "
          f"{len(zh_held)} zh and {len(en_held)} en documents, each scored alone")
    print("| model | Chinese bits/byte | English bits/byte | Chinese training corpus, tokens | realised shares |")
    print("|---|---:|---:|---:|---|")
    print(f"| English base (before) | {before[0]:.4f} | {before[1]:.4f} | | |")
    for arm, (zh_bpb, en_bpb, stats) in rows.items():
        shares = ", ".join(f"{Path(s['source']).stem.split('-')[0]} {s['share']:.3f}" for s in stats)
        print(f"| continued, {arm} | {zh_bpb:.4f} | {en_bpb:.4f} | {corpus_tokens[arm]:,} | {shares} |")
    med = {k: statistics.median(v) for k, v in masking.items()}
    diffs = [a - b for a, b in zip(masking[True], masking[False])]
    print(f"\ndocument masking, {args.masking_steps} steps from scratch, seeds {args.seeds}: held-out English bits/byte "
          f"masked {med[True]:.4f} ({min(masking[True]):.4f}-{max(masking[True]):.4f}) vs plain causal packing "
          f"{med[False]:.4f} ({min(masking[False]):.4f}-{max(masking[False]):.4f}); masked minus plain per seed: "
          f"{', '.join(f'{d:+.4f}' for d in diffs)}")
    (ext_zh, ext_en, _), (en_zh, en_en, _) = rows["extended"], rows["English tokenizer"]
    print(f"ratio extended/English tokenizer: Chinese bits/byte {ext_zh / en_zh:.2f}x, Chinese corpus tokens "
          f"{corpus_tokens['extended'] / corpus_tokens['English tokenizer']:.2f}x, English bits/byte "
          f"{ext_en / en_en:.3f}x; document masking masked/plain bits/byte {med[True] / med[False]:.4f}x")


if __name__ == "__main__":
    main()
