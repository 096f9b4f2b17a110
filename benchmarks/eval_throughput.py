"""Examples/s of recipes/eval.py's log-likelihood scorer vs a plain batched forward over the same inputs.

    python benchmarks/eval_throughput.py                            # tiny LLaMA (configs/model/tiny.yaml), minutes
    python benchmarks/eval_throughput.py --model outputs/tiny/sft   # the demo's model
    python benchmarks/eval_throughput.py --tiny                     # seconds: the test suite runs this

Three workloads, as configs/eval/tiny.yaml has them: SST-2 classification by verbaliser log-likelihood
(`scoring.classify`, the eval template, 0-shot and 4-shot prompts, 2 verbalisers = 2 windows per sentence), and
perplexity / bits per byte (`scoring.language_modeling`, C4 documents in rolling windows of the model's context,
stride 256). Ours is the scorer as eval.py calls it, from texts to log-likelihoods: tokenizing, windows, padded
batches, forward, sums. The baseline is the strongest fair loop over the same inputs: the very windows ours scored
(recorded from its first call), in the same padded batches (same order, same batch size), built before the clock
starts; then `model(input_ids, attention_mask)` + log_softmax + one gather per batch under torch.inference_mode.
Same process, same threads, same model. Each side is warmed by two untimed passes; rounds alternate baseline / ours,
each timing enough passes of a side to take about a second (a 0.1 s pass is at the mercy of the scheduler);
reported: medians of examples/s and the median and spread of the per-round ratios. The baseline's log-likelihoods
are checked against ours (same work, same answer).

Without --model, the model is a random-init tiny LLaMA (speed does not depend on the weights) with a byte-level BPE
trained here on the benchmark's own text (or --tokenizer).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # the scorer's progress bars: display only, per batch

import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from llm_recipes.evaluation import scoring as ev  # noqa: E402
from llm_recipes.model import ModelArguments, build_llama_config, count_parameters  # noqa: E402
from llm_recipes.tokenizer import train_bpe, wrap  # noqa: E402

DATA = Path(os.environ.get("DATA_DIR", REPO.parent / "shared" / "data"))
TEMPLATE, VERBALIZERS = "Review: {text}\nSentiment:", {0: " negative", 1: " positive"}  # configs/eval/tiny.yaml


def sst2() -> list[tuple[str, int]]:
    with open(DATA / "sst2" / "sst2_glue_dev.tsv", encoding="utf-8", newline="") as f:
        rows = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        return [(r["sentence"].strip(), int(r["label"])) for r in rows]


def c4() -> list[str]:
    return [json.loads(line)["text"] for line in (DATA / "c4_demo" / "c4_demo.jsonl").open(encoding="utf-8")]


def random_model(preset: str, tokenizer_dir: str | None, texts: list[str], bpe_vocab: int,
                 model_vocab: int | None = None):
    """A random-init LLaMA of a configs/model preset and its tokenizer (from `tokenizer_dir`, else a byte-level BPE
    of `bpe_vocab` trained on `texts`). The model's vocabulary follows the tokenizer, as in recipes/pretrain.py,
    unless `model_vocab` asks for more rows (a preset's 32k vocab: its real size)."""
    if tokenizer_dir:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    else:
        tokenizer = wrap(train_bpe(iter([texts]), bpe_vocab, 2, len(texts)), 1024)
    config = build_llama_config(ModelArguments(model_preset=preset), tokenizer=tokenizer)
    config.vocab_size = max(config.vocab_size, model_vocab or 0)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def recorded(call):
    """Run `call()` with the scorer's score_windows recorded: the windows it scored and their sums."""
    seen, original = [], ev.score_windows

    def record(model, windows, batch_size, pad_id, desc):
        sums = original(model, windows, batch_size, pad_id, desc)
        seen.append((windows, sums))
        return sums

    ev.score_windows = record
    try:
        call()
    finally:
        ev.score_windows = original
    return [w for ws, _ in seen for w in ws], [s for _, ss in seen for s in ss]


def padded_batches(windows: list[ev.Window], batch_size: int, pad_id: int) -> list[tuple]:
    """The batches score_windows forms (longest first, right-padded, by its own padded_batch), as tensors, plus the
    mask of scored targets."""
    order = sorted(range(len(windows)), key=lambda i: -len(windows[i].tokens))
    batches = []
    for b in range(0, len(order), batch_size):
        rows = order[b:b + batch_size]
        ids, mask, scored = ev.padded_batch([windows[i] for i in rows], pad_id)
        batches.append((ids[:, :-1], mask[:, :-1], ids[:, 1:], scored, torch.tensor(rows)))
    return batches


@torch.inference_mode()
def plain_forward(model, batches, n_windows: int) -> torch.Tensor:
    sums = torch.zeros(n_windows, dtype=torch.float64)
    for inputs, mask, targets, scored, rows in batches:
        logprobs = torch.log_softmax(model(input_ids=inputs, attention_mask=mask).logits.float(), dim=-1)
        token_lp = logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        sums[rows] = (token_lp * scored).sum(dim=1).double()
    return sums


def workloads(args, model, tokenizer) -> dict:
    """name -> (examples, our call): each as recipes/eval.py makes it."""
    rows = sst2()
    demos, labelled = rows[:64], rows[64:64 + args.examples]  # eval.py splits a demo pool off first (64 rows)
    texts = [t for t, _ in labelled]
    context = args.context_length or model.config.max_position_embeddings
    docs = c4()[:args.documents]
    pad = tokenizer.pad_token_id or 0
    out = {}
    for shots in args.shots:
        out[f"classify {shots}-shot"] = (len(texts), lambda k=shots: ev.classify(
            model, tokenizer, texts, TEMPLATE, VERBALIZERS, demos, k, 42, context, args.batch_size))
    out["perplexity"] = (len(docs), lambda: ev.language_modeling(
        model, tokenizer, docs, context, min(256, context), args.batch_size, tokenizer.eos_token_id, "ppl"))
    return {name: (n, call, pad) for name, (n, call) in out.items()}


def bench(name: str, n: int, call, pad: int, model, args) -> dict:
    windows, sums = recorded(call)
    batches = padded_batches(windows, args.batch_size, pad)
    theirs = plain_forward(model, batches, len(windows))
    diff = (theirs - torch.tensor(sums, dtype=torch.float64)).abs().max().item()
    assert diff < 1e-3 * max(1.0, max(abs(s) for s in sums)), f"{name}: baseline and ours disagree by {diff}"
    start = time.perf_counter()
    plain_forward(model, batches, len(windows))  # a second untimed pass each, which also sizes the rounds
    call()
    repeat = 1 if args.tiny else min(20, max(1, round(2.0 / (time.perf_counter() - start))))
    ours_t, base_t = [], []
    for _ in range(args.rounds):  # alternate, so drift of the machine hits both sides alike
        start = time.perf_counter()
        for _ in range(repeat):
            plain_forward(model, batches, len(windows))
        base_t.append((time.perf_counter() - start) / repeat)
        start = time.perf_counter()
        for _ in range(repeat):
            call()
        ours_t.append((time.perf_counter() - start) / repeat)
    ratios = sorted(b / o for o, b in zip(ours_t, base_t))  # ours examples/s over the baseline's, per round
    tokens = sum(len(w.tokens) - 1 for w in windows)
    return {"workload": name, "examples": n, "windows": len(windows), "input_tokens": tokens, "repeat": repeat,
            "ours_eps": n / statistics.median(ours_t), "base_eps": n / statistics.median(base_t),
            "ratio": statistics.median(ratios), "spread": [ratios[0], ratios[-1]], "max_abs_diff": diff}


def main(argv: list[str] | None = None) -> list[dict]:
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("--model", default=None, help="a causal LM folder (e.g. outputs/tiny/sft); default: random tiny")
    cli.add_argument("--tokenizer", default=None, help="tokenizer folder for the random model; default: trained here")
    cli.add_argument("--preset", default="tiny", help="configs/model preset of the random model")
    cli.add_argument("--examples", type=int, default=100, help="SST-2 sentences classified (at most 808)")
    cli.add_argument("--documents", type=int, default=50, help="C4 documents scored for perplexity (at most 300)")
    cli.add_argument("--shots", type=int, nargs="+", default=[0, 4])
    cli.add_argument("--batch_size", type=int, default=16, help="eval.py's default")
    cli.add_argument("--context_length", type=int, default=None, help="longest window; default: the model's")
    cli.add_argument("--rounds", type=int, default=5)
    cli.add_argument("--tiny", action="store_true", help="seconds: 8 sentences, 4 documents, 2 rounds, context 256, "
                                                         "a 1,024-token BPE")
    args = cli.parse_args(argv)
    if args.tiny:
        args.examples, args.documents, args.rounds, args.context_length = 8, 4, 2, 256
    torch.set_grad_enabled(False)

    if args.model:
        model, tokenizer = AutoModelForCausalLM.from_pretrained(args.model), AutoTokenizer.from_pretrained(args.model)
    else:
        corpus = [t for t, _ in sst2()] + c4()
        model, tokenizer = random_model(args.preset, args.tokenizer, corpus, 1024 if args.tiny else 4096)
    model.eval()
    results = [bench(name, n, call, pad, model, args)
               for name, (n, call, pad) in workloads(args, model, tokenizer).items()]

    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; model {args.model or f'random {args.preset}'} "
          f"({count_parameters(model).total:,} params, vocab {model.config.vocab_size}, context "
          f"{args.context_length or model.config.max_position_embeddings}); batch {args.batch_size}; {args.rounds} "
          "alternating rounds, medians")
    for r in results:
        print(f"{r['workload']}: {r['examples']} examples, {r['windows']} windows, {r['input_tokens']:,} input tokens, "
              f"{r['repeat']} passes a round; "
              f"ours {r['ours_eps']:,.1f} examples/s, plain forward {r['base_eps']:,.1f} examples/s "
              f"(max |log-lik diff| {r['max_abs_diff']:.1e})")
    for r in results:
        print(f"ratio ours/plain forward, {r['workload']}: {r['ratio']:.3f}x (spread {r['spread'][0]:.3f}-"
              f"{r['spread'][1]:.3f})")
    return results


if __name__ == "__main__":
    main()
