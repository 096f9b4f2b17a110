"""Labelled data for recipes/classify.py: read, label names, stratified splits, EDA augmentation of train only,
tokenization, and the report (Markdown + confusion-matrix PNGs)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import datasets

from llm_recipes.augment import EdaRates, augment_text
from llm_recipes.config import ConfigError
from llm_recipes.corpus import BUILDERS, local_files
from llm_recipes.evaluation.data import read_table
from llm_recipes.evaluation.report import confusion_png

SPLITS = ("train", "validation", "test")


@dataclass
class ClassifyDataArguments:
    train_file: str = field(
        metadata={"help": "CSV / TSV / JSON(L) / parquet file or glob (${ENV} expanded), or a Hub dataset id (its "
                          "train split; its validation / test splits are used when present)."})
    validation_file: str | None = field(default=None, metadata={"help": "Default: split off train with the seed."})
    test_file: str | None = field(default=None, metadata={"help": "Default: split off train with the seed."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "Hub dataset configuration."})
    text_column: str = field(default="text", metadata={"help": "Column with the text."})
    text_pair_column: str | None = field(default=None, metadata={"help": "Second text of a sentence pair (NLI, MRPC)."})
    label_column: str = field(default="label", metadata={"help": "Column with the label (a name or a class id)."})
    class_names: list[str] | None = field(
        default=None, metadata={"help": "Label names in class-id order; labels in the data are these names or ids "
                                        "into this list. Default: the sorted distinct labels of train. (Not "
                                        "`label_names`: TrainingArguments uses that for the label input keys.)"})
    validation_split_size: float = field(default=0.1, metadata={"help": "Share of train held out for validation."})
    test_split_size: float = field(default=0.1, metadata={"help": "Share of train held out for test."})
    train_fraction: float = field(default=1.0, metadata={"help": "Train on this share of the train split (seeded)."})
    max_length: int = field(default=256, metadata={"help": "Tokens per example (truncated beyond)."})
    language: str = field(default="en", metadata={"help": "en or zh: augmentation splits words by spaces or by jieba."})
    augment_copies: int = field(default=0, metadata={"help": "EDA copies added per train example (0: off)."})
    augment_rate: float = field(
        default=0.1, metadata={"help": "EDA α for insert, replace and swap, and p for delete (Wei & Zou: 0.1)."})
    drop_empty_text: bool = field(
        default=False, metadata={"help": "Drop records whose text is empty (counted in the report) instead of "
                                         "stopping with an error."})


def _read(path: str, args: ClassifyDataArguments) -> dict[str, datasets.Dataset]:
    """A local table (one split) or a Hub dataset (its splits)."""
    columns = tuple(c for c in (args.text_column, args.text_pair_column, args.label_column) if c)
    if local_files(path, BUILDERS) is not None:
        return {"file": read_table(path, columns)}
    try:
        loaded = datasets.load_dataset(path, args.dataset_config_name)
    except Exception as e:  # noqa: BLE001 - offline, unknown name, gated: one line, whatever the library raised
        raise ConfigError(f"{path}: not a local file, and loading it as a Hub dataset failed ({type(e).__name__}: "
                          f"{str(e).splitlines()[0][:200] if str(e) else ''})") from None
    missing = [c for c in columns if c not in loaded["train"].column_names]
    if missing:
        raise ConfigError(f"{path}: no column {', '.join(map(repr, missing))} (columns: "
                          f"{', '.join(loaded['train'].column_names)}); set text_column / label_column")
    return dict(loaded)


def _label_ids(ds: datasets.Dataset, names: list[str], where: str, args: ClassifyDataArguments) -> list[int]:
    index = {n: i for i, n in enumerate(names)}
    ids = []
    for row, value in enumerate(ds[args.label_column], start=1):
        key = str(value).strip()
        if key in index:
            ids.append(index[key])
        elif key.lstrip("-").isdigit() and 0 <= int(key) < len(names):
            ids.append(int(key))
        else:
            raise ConfigError(f"{where}, record {row}: label {value!r} is not in class_names {names}")
    return ids


def _examples(ds: datasets.Dataset, names: list[str], where: str, args: ClassifyDataArguments,
              dropped: dict) -> datasets.Dataset:
    texts = [str(t if t is not None else "").strip() for t in ds[args.text_column]]
    empty = [i for i, text in enumerate(texts) if not text]
    if empty and not args.drop_empty_text:
        raise ConfigError(f"{where}, record {empty[0] + 1}: text column {args.text_column!r} is empty "
                          f"({len(empty)} such record(s)); set drop_empty_text: true to drop and count them")
    if empty:
        dropped[where] = len(empty)
        ds = ds.select([i for i in range(len(texts)) if texts[i]])  # a list: datasets cannot fingerprint a generator
        texts = [t for t in texts if t]
    columns = {"text": texts, "label": _label_ids(ds, names, where, args), "augmented": [False] * len(texts)}
    if args.text_pair_column:
        columns["text_pair"] = [str(t or "").strip() for t in ds[args.text_pair_column]]
    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=names),
                                  "augmented": datasets.Value("bool"),
                                  **({"text_pair": datasets.Value("string")} if args.text_pair_column else {})})
    return datasets.Dataset.from_dict(columns, features=features)


def class_names_of(ds: datasets.Dataset, args: ClassifyDataArguments, where: str) -> list[str]:
    if args.class_names:
        return [str(n) for n in args.class_names]
    values = sorted({str(v).strip() for v in ds[args.label_column] if v is not None and str(v).strip()},
                    key=lambda v: (0, int(v), "") if v.lstrip("-").isdigit() else (1, 0, v))
    if len(values) < 2:
        raise ConfigError(f"{where}: only one label ({', '.join(values) or 'none'}) in column {args.label_column!r}: "
                          "a classifier needs at least two")
    return values


def load_splits(args: ClassifyDataArguments, seed: int) -> tuple[datasets.DatasetDict, list[str], dict]:
    """Train / validation / test with class ids, the label names, and row counts. Only train is augmented, after the
    held-out splits are taken, so no augmented copy of a validation or test example can reach train."""
    source, dropped = _read(args.train_file, args), {}
    raw_train = source.get("file", source.get("train"))
    names = class_names_of(raw_train, args, args.train_file)
    train = _examples(raw_train, names, args.train_file, args, dropped)
    held = {}
    for split, path in (("validation", args.validation_file), ("test", args.test_file)):
        if path:
            ds = _read(path, args)
            held[split] = _examples(ds.get("file", ds.get(split, ds.get("train"))), names, path, args, dropped)
        elif split in source:  # a Hub dataset's own split
            held[split] = _examples(source[split], names, f"{args.train_file} [{split}]", args, dropped)
    for split, size in (("test", args.test_split_size), ("validation", args.validation_split_size)):
        if split not in held:
            if not size:
                held[split] = train.select([])
                continue
            parts = train.train_test_split(test_size=size, seed=seed, stratify_by_column="label")
            train, held[split] = parts["train"], parts["test"]
    if args.train_fraction < 1.0:
        train = train.shuffle(seed=seed).select(range(max(2, round(args.train_fraction * len(train)))))
    original = len(train)
    if args.augment_copies:
        train = augment(train, args, seed)
    if not len(held["validation"]):
        raise ConfigError("no validation split: give validation_file or a validation_split_size > 0")
    splits = datasets.DatasetDict({"train": train, **held})
    report = {"rows": {s: len(splits[s]) for s in SPLITS}, "train_original": original,
              "train_augmented": len(train) - original, "dropped_empty_text": dropped}
    return splits, names, report


def augment(train: datasets.Dataset, args: ClassifyDataArguments, seed: int) -> datasets.Dataset:
    """`augment_copies` EDA copies of each train example (as data_prep's augment step), each with its own seeded RNG."""
    rate = args.augment_rate
    params = EdaRates(alpha_insert=rate, alpha_replace=rate, alpha_delete=rate, alpha_swap=rate)
    rows = {k: [] for k in train.column_names}
    for i, example in enumerate(train):
        for a in range(args.augment_copies):
            rng = random.Random(f"{seed}:{i}:{a}")
            text = augment_text(example["text"], args.language, params, rng)
            if text.strip():
                for k in rows:
                    rows[k].append(example[k])
                rows["text"][-1], rows["augmented"][-1] = text, True
    return datasets.concatenate_datasets([train, datasets.Dataset.from_dict(rows, features=train.features)])


def tokenize_splits(splits: datasets.DatasetDict, tokenizer, args: ClassifyDataArguments) -> datasets.DatasetDict:
    def encode(batch):
        pair = batch["text_pair"] if args.text_pair_column else None
        return tokenizer(batch["text"], pair, truncation=True, max_length=args.max_length)

    return splits.map(encode, batched=True, remove_columns=["text", "augmented"] + (
        ["text_pair"] if args.text_pair_column else []), desc="tokenize").rename_column("label", "labels")


def write_confusion_pngs(results: dict, folder: Path) -> None:
    for split in SPLITS:
        if split in results:
            confusion_png(results[split]["confusion_matrix"], results["labels"], f"{split} (rows: true label)",
                          folder / f"confusion_{split}.png")


def report_markdown(results: dict) -> str:
    names = results["labels"]
    lines = ["# Classifier report", "", f"Labels: {', '.join(names)}. Rows: " +
             ", ".join(f"{s} {n}" for s, n in results["data"]["rows"].items()) +
             f" (train includes {results['data']['train_augmented']} augmented copies).", "",
             "| split | accuracy | macro precision | macro recall | macro F1 | majority-class accuracy |",
             "|---|---:|---:|---:|---:|---:|"]
    for split in ("validation", "test"):
        if split in results:
            r = results[split]
            lines.append(f"| {split} | {r['accuracy']:.4f} | {r['precision_macro']:.4f} | {r['recall_macro']:.4f} | "
                         f"{r['f1_macro']:.4f} | {r['majority_baseline']['accuracy']:.4f} |")
    for split in ("validation", "test"):
        if split in results:
            r = results[split]
            lines += ["", f"## {split}: F1 per class and confusion matrix (rows: true, columns: predicted)", "",
                      "| | " + " | ".join(names) + " | F1 |", "|---|" + "---:|" * (len(names) + 1)]
            lines += [f"| **{n}** | " + " | ".join(str(v) for v in row) + f" | {r['f1_per_class'][i]:.4f} |"
                      for i, (n, row) in enumerate(zip(names, r["confusion_matrix"]))]
            lines.append(f"\n![confusion matrix, {split}](confusion_{split}.png)")
    return "\n".join(lines) + "\n"
