"""What makes an output folder Hub-ready: files that transformers 4.x and 5 clients both read, the training recipe of
every stage, a model card with the eval results, and a check that no local path or token is inside.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.utils import HFValidationError, validate_repo_id

from llm_recipes.config import ConfigError
from llm_recipes.redact import HUB_TOKEN_PATTERN
from llm_recipes.run_info import REPO_ROOT

logger = logging.getLogger(__name__)

# Keys of a resolved config that name the folder the stage started from: the recipe lineage follows them.
UPSTREAM_KEYS = ("model_name_or_path", "adapter_dir", "checkpoint_dir", "base_model_name_or_path", "dataset_path",
                 "tokenizer_name_or_path")
SOURCE_LIST_KEYS = ("train_sources", "validation_sources")
TEXT_SUFFIXES = {".json", ".jinja", ".md", ".yaml", ".yml", ".txt", ".model"}


# --- transformers 4.x clients ----------------------------------------------------------------------------------------


def make_transformers4_readable(folder: Path) -> None:
    """Rewrite what transformers 5 saves into what 4.x also reads; transformers 5 loads the result unchanged.

    4.x knows no `TokenizersBackend` class (AutoTokenizer fails), reads the chat template only from
    tokenizer_config.json, expects `additional_special_tokens` (its `extra_special_tokens` is a dict), and ignores
    `rope_parameters`: without a top-level `rope_theta` it silently uses 10000.
    """
    config_file = folder / "config.json"
    if config_file.is_file():  # an exported adapter has none
        config = json.loads(config_file.read_text())
        rope = config.get("rope_parameters") or {}
        if "rope_theta" in rope:
            config["rope_theta"] = rope["rope_theta"]
            extra = {k: v for k, v in rope.items() if k != "rope_theta"}
            config["rope_scaling"] = None if extra.get("rope_type", "default") == "default" else extra
        if "dtype" in config:
            config["torch_dtype"] = config["dtype"]  # the key before 4.56
        config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")

    tok_file = folder / "tokenizer_config.json"
    tok = json.loads(tok_file.read_text())
    tok["tokenizer_class"] = "PreTrainedTokenizerFast"
    for key in ("backend", "is_local", "local_files_only", "name_or_path"):
        tok.pop(key, None)
    extra = tok.pop("extra_special_tokens", None)
    if isinstance(extra, list):
        tok["additional_special_tokens"] = extra
    elif extra:
        tok["extra_special_tokens"] = extra
    template_file = folder / "chat_template.jinja"
    if template_file.is_file():  # kept as a file too: transformers 5 prefers it
        tok["chat_template"] = template_file.read_text()
    tok_file.write_text(json.dumps(tok, indent=2, ensure_ascii=False) + "\n")

    special = {k: tok[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token") if tok.get(k)}
    if tok.get("additional_special_tokens"):
        special["additional_special_tokens"] = tok["additional_special_tokens"]
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2, ensure_ascii=False) + "\n")


# --- the recipe of every stage ---------------------------------------------------------------------------------------


def _roots() -> list[tuple[str, str]]:
    """Absolute prefixes that must not leave the machine, longest first, with what replaces them."""
    roots = {str(REPO_ROOT): ".", str(Path.home()): "~", tempfile.gettempdir(): "<tmp>"}
    if os.environ.get("DATA_DIR"):
        roots[str(Path(os.environ["DATA_DIR"]).resolve())] = "${DATA_DIR}"
        roots[os.environ["DATA_DIR"]] = "${DATA_DIR}"
    return sorted(((k, v) for k, v in roots.items() if k not in ("/", "")), key=lambda kv: -len(kv[0]))


def redact_paths(value: Any) -> Any:
    """Local absolute paths in a config value (also inside longer strings, e.g. a command line) -> ${DATA_DIR}/...,
    ./..., ~/..., <tmp>/... or, for a path that is the whole value, <local>/<last part>."""
    if isinstance(value, dict):
        return {k: redact_paths(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_paths(v) for v in value]
    if not isinstance(value, str):
        return value
    for root, name in _roots():
        value = re.sub(re.escape(root.rstrip("/")) + r"(?![\w.-])", lambda _: name, value)
    return f"<local>/{Path(value).name}" if value.startswith("/") else value


def recipe_lineage(start: str | os.PathLike) -> list[tuple[str, dict]]:
    """(stage, resolved config) of `start` and of every local folder it was built from, newest stage first."""
    stages, seen, todo = [], set(), [Path(start)]
    while todo:
        folder = todo.pop(0)
        resolved = folder.resolve()
        if resolved in seen or not (folder / "resolved_config.yaml").is_file():
            continue
        seen.add(resolved)
        config = yaml.safe_load((folder / "resolved_config.yaml").read_text()) or {}
        info_file = folder / "run_info.json"
        stage = json.loads(info_file.read_text()).get("recipe") if info_file.is_file() else None
        stages.append((stage or folder.name, config))
        upstream = [config.get(key) for key in UPSTREAM_KEYS]
        for key in SOURCE_LIST_KEYS:  # corpus sources: a data_prep split folder sits inside its run folder
            upstream += [s.get("path") for s in config.get(key) or [] if isinstance(s, dict)]
        for value in upstream:
            if isinstance(value, str) and value and "$" not in value:
                path = Path(value) if Path(value).is_absolute() else REPO_ROOT / value
                path = path if path.exists() else Path(value)
                todo += [path, path.parent] if path.is_dir() and not (path / "resolved_config.yaml").is_file() \
                    else [path]
    return stages


def write_recipe_files(stages: list[tuple[str, dict]], folder: Path) -> list[tuple[str, str]]:
    """training_recipe/<n>-<stage>.yaml, oldest stage first; returns (file name, YAML text) for the model card."""
    out = folder / "training_recipe"
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i, (stage, config) in enumerate(reversed(stages), start=1):
        name = f"{i:02d}-{stage}.yaml"
        text = yaml.safe_dump(redact_paths(config), sort_keys=False, allow_unicode=True)
        (out / name).write_text(f"# Resolved config of {stage}: replay with --config {name}\n" + text)
        written.append((name, text))
    return written


# --- where the model comes from -------------------------------------------------------------------------------------

MODEL_KEYS = ("model_name_or_path", "adapter_dir", "checkpoint_dir")  # a stage's model input, in its resolved config
HUB_CACHE_FOLDER = re.compile(r"models--([\w.-]+)--([\w.-]+)")  # huggingface_hub's cache: models--<org>--<name>


def run_base(start: str | os.PathLike) -> tuple[str | None, Path | None]:
    """The model a run started from: each stage's model input followed back through the folders our recipes wrote
    (they hold a resolved_config.yaml) to the first one they did not. Returns its Hub id (a local folder: its name, or
    the repo id of a Hub cache snapshot) and its local folder, if any; (None, None) when the oldest stage trained from
    scratch."""
    path, seen = Path(start), set()
    if not (path / "resolved_config.yaml").is_file() and (path.parent / "resolved_config.yaml").is_file():
        path = path.parent  # a checkpoint-N inside its run folder
    while (path / "resolved_config.yaml").is_file() and path.resolve() not in seen:
        seen.add(path.resolve())
        config = yaml.safe_load((path / "resolved_config.yaml").read_text()) or {}
        value = next((config[k] for k in MODEL_KEYS if isinstance(config.get(k), str) and config[k]), None)
        if value is None:
            return None, None
        path = Path(value) if Path(value).is_absolute() or not (REPO_ROOT / value).exists() else REPO_ROOT / value
        if not path.exists():
            return value, None  # a Hub id
    name = next((f"{m[1]}/{m[2]}" for part in path.parts if (m := HUB_CACHE_FOLDER.fullmatch(part))), path.name)
    return name, path


def card_metadata(start: str | os.PathLike, *, license: str | None, languages: list[str], tags: list[str],
                  base_model: str | None, model_type: str | None, chat_template: str | None,
                  eval_results: dict | None) -> dict:
    """The card's licence, base_model, languages and tags as the run says them, where the export's config does not:
    base_model is what the run started from (run_base); the licence that base's own card states (a local folder's
    README.md), else "other"; the languages those eval measured; tags name the architecture, ChatML markers and a
    from-scratch start only when they are true of this model."""
    base, folder = run_base(start)
    if base_model is None and base is not None:
        try:
            validate_repo_id(base)
            base_model = base
        except HFValidationError:
            logger.warning("base model %s is not a Hub id: set base_model for the card", base)
    if license is None:
        readme = folder / "README.md" if folder else None
        license = (ModelCard.load(readme).data.license if readme and readme.is_file() else None) or "other"
        if license == "other":
            logger.warning("licence: the base's card states none; set license for the card (it says 'other')")
    if not languages:
        results = eval_results or {}
        found = [s.get("language") for group in ("language_modeling", "classification")
                 for s in results.get(group, {}).values()]
        found += list((results.get("generation") or {}).get("per_language", {}))
        languages = sorted({lang for lang in found if lang and lang != "unknown"})
    derived = ["llm-recipes", model_type] + (["chatml"] if "<|im_start|>" in (chat_template or "") else []) + (
        ["from-scratch"] if base is None else [])
    return {"license": license, "base_model": base_model, "languages": languages,
            "tags": list(dict.fromkeys(t for t in [*derived, *tags] if t))}


# --- model card -------------------------------------------------------------------------------------------------------

CARD_TEMPLATE = """---
{{ card_data }}
---

# {{ model_name }}

{{ summary }}

## How to use

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("{{ repo_id }}")
model = AutoModelForCausalLM.from_pretrained("{{ repo_id }}")
messages = [{"role": "user", "content": "Who are you?"}]
inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True, return_tensors="pt")
out = model.generate(**inputs, max_new_tokens=64)
print(tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))
```

{% if stops %}Stops at {{ stops }} through `generation_config.json`. {% endif %}Loads with transformers 5 and 4.x
(`tokenizer_class: PreTrainedTokenizerFast`, chat template also in `tokenizer_config.json`, top-level `rope_theta`).
{% if gguf_file %}A GGUF file for llama.cpp is included: `{{ gguf_file }}`.{% endif %}

## Evaluation

{% if eval_table %}{{ eval_table }}

Computed with `make eval` (`recipes/eval.py`): perplexity and bits per byte on held-out text, zero/k-shot sentiment
classification by verbaliser log-likelihood, generation stop rate. Full results: `eval_results.json`.
{% else %}Not evaluated: run `make eval` before `make export` to put the metrics here.
{% endif %}

## Training recipe

Trained with the llm-recipes pipeline, stage by stage; the resolved config of every stage is in
`training_recipe/` (feed one to its recipe with `--config` to replay it).
{% for name, text in recipes %}
<details><summary>{{ name }}</summary>

```yaml
{{ text }}```

</details>
{% endfor %}

## Limitations

{{ limitations }}
"""


def eval_results_for_card(results: dict) -> tuple[list[EvalResult], str]:
    """model-index entries and a Markdown table from recipes/eval.py's eval_results.json."""
    entries, rows = [], ["| task | dataset | metric | value |", "|---|---|---|---:|"]
    for name, lm in results.get("language_modeling", {}).items():
        for metric in ("bits_per_byte", "perplexity"):
            # dataset_config tells the sets apart: the Hub groups a model-index by task, dataset type and config
            entries.append(EvalResult(task_type="text-generation", task_name="Language modelling",
                                      dataset_type="text", dataset_name=f"held-out text ({name})",
                                      dataset_config=name, metric_type=metric, metric_value=round(lm[metric], 4)))
            rows.append(f"| language modelling | held-out text ({name}) | {metric} | {lm[metric]:.4f} |")
    for name, cls in results.get("classification", {}).items():
        for shots, scores in cls["shots"].items():
            for metric in ("accuracy", "f1_macro"):
                entries.append(EvalResult(task_type="text-classification", task_name=f"Sentiment ({shots}-shot)",
                                          dataset_type=name, dataset_name=cls.get("dataset_name", name),
                                          metric_type="f1" if metric == "f1_macro" else metric,
                                          metric_name=f"{metric} ({shots}-shot)",
                                          metric_value=round(scores[metric], 4),
                                          metric_config="macro" if metric == "f1_macro" else None))
                rows.append(f"| sentiment {shots}-shot | {cls.get('dataset_name', name)} | {metric} | "
                            f"{scores[metric]:.4f} |")
        majority = cls["majority_baseline"]
        rows.append(f"| sentiment (majority class) | {cls.get('dataset_name', name)} | accuracy | "
                    f"{majority['accuracy']:.4f} |")
    gen = results.get("generation")
    if gen:
        rows.append(f"| chat generation | prompt file | stopped at EOS | {gen['stopped_share']:.2%} |")
    for task, metrics in results.get("lm_eval", {}).get("results", {}).items():
        for metric, value in metrics.items():
            if isinstance(value, float) and "stderr" not in metric:
                rows.append(f"| lm-eval | {task} | {metric} | {value:.4f} |")
    return entries, "\n".join(rows) if len(rows) > 2 else ""


def build_model_card(*, model_name: str, repo_id: str, license: str, languages: list[str], datasets: list[str],
                     base_model: str | None, tags: list[str], summary: str, limitations: str,
                     eval_results: dict | None, recipes: list[tuple[str, str]], gguf_file: str | None,
                     stop_tokens: list[str] = ()) -> ModelCard:
    entries, table = eval_results_for_card(eval_results or {})
    data = ModelCardData(
        model_name=model_name, license=license, language=languages or None, datasets=datasets or None,
        base_model=base_model, tags=tags or None, library_name="transformers", pipeline_tag="text-generation",
        eval_results=entries or None,
    )
    return ModelCard.from_template(data, template_str=CARD_TEMPLATE, model_name=model_name, repo_id=repo_id,
                                   summary=summary, limitations=limitations, eval_table=table, recipes=recipes,
                                   gguf_file=gguf_file, stops=" or ".join(f"`{t}`" for t in stop_tokens))


# --- nothing local, nothing secret ------------------------------------------------------------------------------------


def _without_vocabulary(path: Path, text: str) -> str:
    """What of a file may name a path: a byte-level vocabulary holds pieces such as `/root` and `/tmp` (Llama 3's and
    Qwen's do), which are text the model reads, not places on this machine."""
    if path.suffix == ".model":  # a SentencePiece model: pieces and their scores only
        return ""
    if path.name == "tokenizer.json":
        data = json.loads(text)
        for key in ("vocab", "merges"):
            (data.get("model") or {}).pop(key, None)
        return json.dumps(data, ensure_ascii=False)
    return text


def check_no_leaks(folder: Path, extra_paths: list[str] = ()) -> None:
    """Refuse to publish a folder that names a local absolute path or holds the Hub token."""
    needles = [root for root, _ in _roots() if len(root) > 1] + [str(Path(p).resolve()) for p in extra_paths]
    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.suffix not in TEXT_SUFFIXES:
            continue
        text = path.read_text(errors="replace")
        if (token and token in text) or HUB_TOKEN_PATTERN.search(text):
            raise ConfigError(f"{path.relative_to(folder)}: contains a Hub token; refusing to publish it")
        text = _without_vocabulary(path, text)
        for needle in needles:
            if re.search(re.escape(needle) + r"(?![\w.-])", text):
                raise ConfigError(f"{path.relative_to(folder)}: contains the local path {needle}")
