"""How recipes/eval.py measures a causal LM: sliding-window log-likelihood (perplexity, bits per byte), verbaliser
log-likelihood classification (zero- and k-shot), chat generation stop rate, and the metric modules of `evaluate`.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass

import datasets
import evaluate
import numpy as np
import torch
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_score, recall_score
from tqdm.auto import tqdm

# --- metrics: evaluate's Metric API, offline -------------------------------------------------------------------------
# evaluate.load("accuracy") fetches its module from the Hub at run time. These are the same computations as the
# Hub's evaluate-metric/{accuracy,precision,recall,f1,confusion_matrix} modules (scikit-learn), defined here so that
# nothing is downloaded; they take add_batch / compute and combine with evaluate.combine like any loaded module.

_FEATURES = datasets.Features({"predictions": datasets.Value("int32"), "references": datasets.Value("int32")})


def _metric(name: str, fn, doc: str):
    def _info(self):
        return evaluate.MetricInfo(description=doc, citation="", inputs_description="predictions, references: "
                                   "class ids", features=_FEATURES, module_type="metric")

    def _compute(self, predictions, references, **kwargs):
        value = fn(references, predictions, **kwargs)
        return {name: value.tolist() if isinstance(value, np.ndarray) else float(value)}

    return type(name.title().replace("_", ""), (evaluate.Metric,), {"_info": _info, "_compute": _compute})


Accuracy = _metric("accuracy", accuracy_score, "Share of predictions equal to the reference.")
Precision = _metric("precision", precision_score, "Precision (scikit-learn), average from compute kwargs.")
Recall = _metric("recall", recall_score, "Recall (scikit-learn), average from compute kwargs.")
F1 = _metric("f1", f1_score, "F1 (scikit-learn), average from compute kwargs.")
ConfusionMatrix = _metric("confusion_matrix", confusion_matrix, "Rows: reference class, columns: predicted class.")


def classification_scores(predictions: list[int], references: list[int], labels: list[int]) -> dict:
    """Accuracy, macro precision / recall / F1, per-class F1 and the confusion matrix."""
    kw = {"labels": labels, "zero_division": 0}
    return {
        **Accuracy().compute(predictions=predictions, references=references),
        "precision_macro": Precision().compute(predictions=predictions, references=references, average="macro",
                                               **kw)["precision"],
        "recall_macro": Recall().compute(predictions=predictions, references=references, average="macro",
                                         **kw)["recall"],
        "f1_macro": F1().compute(predictions=predictions, references=references, average="macro", **kw)["f1"],
        "f1_per_class": F1().compute(predictions=predictions, references=references, average=None, **kw)["f1"],
        "confusion_matrix": ConfusionMatrix().compute(predictions=predictions, references=references,
                                                      labels=labels)["confusion_matrix"],
    }


def majority_baseline(references: list[int], labels: list[int]) -> dict:
    """Always answer the eval set's most frequent class: the score any classifier has to beat."""
    majority = Counter(references).most_common(1)[0][0]
    scores = classification_scores([majority] * len(references), references, labels)
    return {"predicts": majority, "accuracy": scores["accuracy"], "f1_macro": scores["f1_macro"]}


# --- batched forward passes -------------------------------------------------------------------------------------------


@dataclass
class Window:
    """tokens[:-1] is the model input; tokens[start + 1 : start + 1 + count] are scored, tokens[p + 1] by the
    logits at position p."""

    tokens: list[int]
    start: int  # first scored logit position
    count: int  # number of scored tokens


def padded_batch(windows: list[Window], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded token ids, their attention mask, and which of the targets ids[:, 1:] each window scores."""
    width = max(len(w.tokens) for w in windows)
    ids = torch.full((len(windows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(windows), width), dtype=torch.long)
    scored = torch.zeros((len(windows), width - 1), dtype=torch.bool)
    for r, w in enumerate(windows):
        ids[r, :len(w.tokens)] = torch.tensor(w.tokens)
        mask[r, :len(w.tokens)] = 1
        scored[r, w.start:w.start + w.count] = True
    return ids, mask, scored


LOGIT_BUDGET = 2**27  # logits per forward pass (512 MB in fp32): ours takes 16 rows of 1k, Qwen's 152k vocab 1 row


@torch.inference_mode()
def score_windows(model, windows: list[Window], batch_size: int, pad_id: int, desc: str) -> list[float]:
    """Sum of log-probs of the scored tokens of each window (right-padded batches, longest first). A batch is cut
    into fewer rows when its logits would pass LOGIT_BUDGET: batch x length x vocabulary fp32 scores of a 128k-152k
    vocabulary are gigabytes (16 x 1k x 152k = 10 GB)."""
    order = sorted(range(len(windows)), key=lambda i: -len(windows[i].tokens))
    sums = [0.0] * len(windows)
    device = next(model.parameters()).device
    vocab = model.get_output_embeddings().weight.shape[0]
    b, progress = 0, tqdm(total=len(order), desc=desc, unit="window")
    while b < len(order):
        rows = max(1, min(batch_size, LOGIT_BUDGET // (len(windows[order[b]].tokens) * vocab)))
        batch = padded_batch([windows[i] for i in order[b:b + rows]], pad_id)
        ids, mask, scored = (t.to(device) for t in batch)
        logits = model(input_ids=ids[:, :-1], attention_mask=mask[:, :-1]).logits.float()
        # log p(target) = its logit - logsumexp: no second vocabulary-sized copy as log_softmax would make
        token_lp = logits.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
        # one gather and one host sync per batch (a sync per window cost a fifth of the throughput at 0-shot)
        for r, total in enumerate(torch.where(scored, token_lp, 0.0).double().sum(dim=1).tolist()):
            sums[order[b + r]] = total
        b += len(batch[0])
        progress.update(len(batch[0]))
    progress.close()
    return sums


# --- language modelling: perplexity and bits per byte ----------------------------------------------------------------


def document_prefix_id(tokenizer) -> int:
    """The token a document starts after, so that its first token is scored too: BOS where the tokenizer puts one
    before every text (Llama 2 and 3, Mistral: what the model saw in pretraining), else eos (ours and Qwen's, whose
    pretraining separated documents with it)."""
    bos = tokenizer.bos_token_id
    if bos is not None and tokenizer("a")["input_ids"][:1] == [bos]:
        return bos
    return tokenizer.eos_token_id


def rolling_windows(token_ids: list[int], prefix_id: int, context_length: int, stride: int) -> list[Window]:
    """Every token of a document scored once, with up to `context_length` tokens before it.

    The document is prefixed with one token (document_prefix_id) so its first token is scored
    too. Each window predicts the next `stride` tokens; stride == context_length gives lm-evaluation-harness's
    disjoint rolling windows exactly, a smaller stride gives every token more context (lower perplexity, slower).
    """
    seq = [prefix_id, *token_ids]
    windows, first = [], 1
    while first < len(seq):
        end = min(first + stride, len(seq))
        begin = max(0, end - 1 - context_length)
        # input seq[begin:end-1]; its logits at positions first-1-begin .. end-2-begin predict seq[first:end]
        windows.append(Window(seq[begin:end], first - 1 - begin, end - first))
        first = end
    return windows


def language_modeling(model, tokenizer, texts: list[str], context_length: int, stride: int, batch_size: int,
                      prefix_id: int, desc: str) -> dict:
    """Token perplexity (depends on the tokenizer) and bits per byte (does not: models with different tokenizers
    compare fairly) of `texts`, each document scored on its own."""
    encoded = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]  # windows cut them to fit
    windows = [w for ids in encoded for w in rolling_windows(ids, prefix_id, context_length, stride)]
    logprob = sum(score_windows(model, windows, batch_size, tokenizer.pad_token_id or 0, desc))
    tokens = sum(len(ids) for ids in encoded)
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    return {
        "documents": len(texts), "tokens": tokens, "bytes": n_bytes, "characters": sum(map(len, texts)),
        "nll_per_token": -logprob / tokens,
        "perplexity": math.exp(min(-logprob / tokens, 50.0)),
        "bits_per_byte": -logprob / (n_bytes * math.log(2)),
        "bytes_per_token": n_bytes / tokens,
        "context_length": context_length, "stride": stride,
    }


# --- classification by verbaliser log-likelihood ---------------------------------------------------------------------


def few_shot_prefix(demos: list[tuple[str, int]], template: str, verbalizers: dict[int, str], separator: str) -> str:
    return "".join(template.format(text=t) + verbalizers[y] + separator for t, y in demos)


def classify(model, tokenizer, texts: list[str], template: str, verbalizers: dict[int, str],
             demo_pool: list[tuple[str, int]], shots: int, seed: int, context_length: int, batch_size: int,
             separator: str = "\n\n", desc: str = "classify") -> tuple[list[int], list[str]]:
    """Predicted label of each text: the verbaliser with the highest log-likelihood after the prompt.

    k-shot: k demonstrations drawn per example from `demo_pool` (a split disjoint from the eval set) with a seeded
    generator. The prompt is cut from the left when it exceeds the context. Returns predictions and the prompts.
    """
    labels = sorted(verbalizers)
    rng = random.Random(seed)
    verbal_ids = {y: tokenizer(verbalizers[y], add_special_tokens=False)["input_ids"] for y in labels}
    windows, prompts = [], []
    for text in texts:
        prompt = few_shot_prefix(rng.sample(demo_pool, shots) if shots else [], template, verbalizers, separator)
        prompt += template.format(text=text)
        prompts.append(prompt)
        ctx = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        for y in labels:
            cont = verbal_ids[y]
            ids = (ctx + cont)[-(context_length + 1):]  # +1: the last token is only a target
            windows.append(Window(ids, len(ids) - 1 - len(cont), len(cont)))
    sums = score_windows(model, windows, batch_size, tokenizer.pad_token_id or 0, desc)
    scores = np.array(sums).reshape(len(texts), len(labels))
    return [labels[j] for j in scores.argmax(axis=1)], prompts


# --- chat generation --------------------------------------------------------------------------------------------------


@torch.no_grad()
def generate_answers(model, tokenizer, prompts: list[str | list[dict]], max_new_tokens: int,
                     batch_size: int) -> list[dict]:
    """Answers through the chat template and the model's generation_config; records whether each stopped at EOS.
    A prompt is one user message, or the conversation so far (a list of {role, content} ending with a user turn)."""
    stops = model.generation_config.eos_token_id
    stops = set(stops if isinstance(stops, list) else [stops])
    tokenizer.padding_side = "left"  # generation continues from the right end of every row
    out_rows = []
    for b in tqdm(range(0, len(prompts), batch_size), desc="generate", unit="batch"):
        chunk = prompts[b:b + batch_size]
        inputs = tokenizer.apply_chat_template([[{"role": "user", "content": p}] if isinstance(p, str) else p
                                                for p in chunk],
                                               add_generation_prompt=True, return_dict=True, return_tensors="pt",
                                               padding=True).to(model.device)
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id)
        for prompt, row in zip(chunk, out[:, inputs["input_ids"].shape[1]:].tolist()):
            stop_at = next((i for i, t in enumerate(row) if t in stops), None)
            answer = row if stop_at is None else row[:stop_at]
            out_rows.append({"prompt": prompt, "answer": tokenizer.decode(answer, skip_special_tokens=True),
                             "answer_tokens": len(answer), "stopped_at_eos": stop_at is not None})
    return out_rows


def generation_summary(rows: list[dict], max_new_tokens: int) -> dict:
    """Share of answers that stopped at EOS and mean answer length, overall and per language."""
    def summary(part):
        return {"prompts": len(part), "stopped_share": sum(r["stopped_at_eos"] for r in part) / len(part),
                "mean_answer_tokens": sum(r["answer_tokens"] for r in part) / len(part)}

    languages = sorted({r.get("language") or "unknown" for r in rows})
    return {**summary(rows), "max_new_tokens": max_new_tokens,
            "per_language": {lang: summary([r for r in rows if (r.get("language") or "unknown") == lang])
                             for lang in languages}}
