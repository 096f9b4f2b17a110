"""Wall time of recipes/export.py (the whole Hub-ready export) vs plain `save_pretrained` of the same model.

    python benchmarks/export_time.py                                     # random tiny LLaMA, seconds a round
    python benchmarks/export_time.py --model_preset 160m --vocab_size 32000   # 162M parameters: where saving matters
    python benchmarks/export_time.py --model outputs/tiny/dpo             # the demo's model
    python benchmarks/export_time.py --tiny                              # seconds: the test suite runs this

Ours is recipes/export.py's `main` as `make export` runs it (configs/export/tiny.yaml's card fields, `--dtype`): load
the model and tokenizer, set the stop tokens, safetensors, tokenizer files, the transformers-4 rewrite, the recipe
lineage and package versions, the model card, the leak check, all staged and renamed into place. The baseline is what
a user would write for the same folder: `AutoModelForCausalLM.from_pretrained(source, dtype=...)` +
`AutoTokenizer.from_pretrained(source)`, then `save_pretrained` of both, same dtype. Both in this process, imports
done, each side warmed by one untimed run; rounds alternate baseline / ours, every round into a fresh folder;
reported: median seconds and the median and spread of the per-round ratios.

The source model is saved once in float32 (as training leaves it), from --model or a random-init preset
(configs/model/<preset>.yaml) with a byte-level BPE trained here (or --tokenizer).
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml
from eval_throughput import REPO, c4, random_model, sst2
from transformers import AutoModelForCausalLM, AutoTokenizer

sys.path.insert(0, str(REPO))
from llm_recipes.checkpoints import DTYPES  # noqa: E402
from llm_recipes.model import count_parameters  # noqa: E402
from recipes import export  # noqa: E402


def folder_mib(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def plain_save(source: Path, out: Path, dtype: str) -> None:
    model = AutoModelForCausalLM.from_pretrained(source, dtype=DTYPES[dtype])
    AutoTokenizer.from_pretrained(source).save_pretrained(out)
    model.save_pretrained(out)


def main(argv: list[str] | None = None) -> dict:
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("--model", default=None, help="a model folder to export (e.g. outputs/tiny/dpo); default: random")
    cli.add_argument("--model_preset", default="tiny", help="configs/model preset of the random model")
    cli.add_argument("--vocab_size", type=int, default=None, help="embedding rows of the random model (default: the "
                                                                  "tokenizer's, as pretraining sets it)")
    cli.add_argument("--tokenizer", default=None, help="tokenizer folder for the random model; default: trained here")
    cli.add_argument("--dtype", default="bfloat16", choices=list(DTYPES), help="export dtype (the recipe's default)")
    cli.add_argument("--eval_results", default=None, help="an eval_results.json for the card (default: none)")
    cli.add_argument("--rounds", type=int, default=5)
    cli.add_argument("--tiny", action="store_true", help="seconds: a 1,024-token BPE, 2 rounds (the tests)")
    args = cli.parse_args(argv)
    if args.tiny:
        args.rounds = 2
    logging.getLogger().setLevel(logging.WARNING)  # export.main turns INFO on: one log block per round otherwise

    with tempfile.TemporaryDirectory(prefix="export_time_") as tmp:
        work = Path(tmp)
        source = Path(args.model) if args.model else work / "source"
        if not args.model:
            texts = [t for t, _ in sst2()] + c4()
            model, tokenizer = random_model(args.model_preset, args.tokenizer, texts, 1024 if args.tiny else 4096,
                                            args.vocab_size)
            model.save_pretrained(source)
            tokenizer.save_pretrained(source)
            del model
        params = count_parameters(AutoModelForCausalLM.from_pretrained(source)).total
        config = yaml.safe_load((REPO / "configs/export/tiny.yaml").read_text())
        for key in ("model_name_or_path", "output_dir", "eval_results", "gguf", "gguf_outtype"):
            config.pop(key)
        (work / "export.yaml").write_text(yaml.safe_dump(config, allow_unicode=True))

        def ours(out: Path) -> None:
            export.main(["--config", str(work / "export.yaml"), "--model_name_or_path", str(source), "--output_dir",
                         str(out), "--dtype", args.dtype]
                        + (["--eval_results", args.eval_results] if args.eval_results else []))
            logging.getLogger().setLevel(logging.WARNING)

        sizes = {}
        for name, fn in (("plain", lambda out: plain_save(source, out, args.dtype)), ("ours", ours)):  # warm-up
            fn(work / f"warm-{name}")
            sizes[name] = folder_mib(work / f"warm-{name}")
            shutil.rmtree(work / f"warm-{name}")
        ours_t, base_t = [], []
        for r in range(args.rounds):  # alternate, so drift of the machine hits both sides alike
            for name, fn, times in (("plain", lambda out: plain_save(source, out, args.dtype), base_t),
                                    ("ours", ours, ours_t)):
                out = work / f"{name}-{r}"
                start = time.perf_counter()
                fn(out)
                times.append(time.perf_counter() - start)
                shutil.rmtree(out)  # the next round writes to a fresh folder, and the disk stays small
    ratios = sorted(o / b for o, b in zip(ours_t, base_t))
    result = {"ours_s": statistics.median(ours_t), "base_s": statistics.median(base_t),
              "ratio": statistics.median(ratios), "spread": [ratios[0], ratios[-1]], "params": params}

    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}; model "
          f"{args.model or f'random {args.model_preset}'} ({params:,} params), exported as {args.dtype}; "
          f"{args.rounds} alternating rounds, medians")
    print(f"plain save_pretrained (model + tokenizer): {result['base_s']:.3f} s, folder {sizes['plain']:.1f} MiB")
    print(f"recipes/export.py:                        {result['ours_s']:.3f} s, folder {sizes['ours']:.1f} MiB")
    print(f"ratio ours/plain seconds: {result['ratio']:.2f}x (spread {ratios[0]:.2f}-{ratios[-1]:.2f}); "
          f"ours minus plain {result['ours_s'] - result['base_s']:+.3f} s")
    return result


if __name__ == "__main__":
    main()
