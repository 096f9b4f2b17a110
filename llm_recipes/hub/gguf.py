"""GGUF for llama.cpp: its own `convert_hf_to_gguf.py`, told which split regex our tokenizer uses.

llama.cpp recognises a byte-level BPE's pre-tokenizer by hashing the encoding of a probe text. A family's released
tokenizer (Llama 3, Qwen 2.5) has a hash it knows, and a SentencePiece vocabulary (Llama 2, Mistral) takes another path;
those convert as they are. A freshly trained tokenizer is "not recognized" and the stock converter stops. Ours uses
Qwen2's split regex with no normaliser, which llama.cpp implements under the name `qwen2`: for an unrecognised hash the
converter is given that name, and only when tokenizer.json really is that regex (anything else would convert, then
tokenize differently in llama.cpp); otherwise it stops with the converter's reason and ours.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from llm_recipes.config import ConfigError
from llm_recipes.tokenizer import QWEN2_SPLIT_REGEX

# Runs in a child process: imports the converter as a module, makes an unknown pre-tokenizer hash resolve to the name
# given on our command line (or stop with our reason when there is none), then hands over to the converter's own main()
# with its own CLI.
_WRAPPER = """
import sys
llama_cpp_dir, pre_name, why_not, *argv = sys.argv[1:]
sys.path[:0] = [llama_cpp_dir, llama_cpp_dir + "/gguf-py"]
import convert_hf_to_gguf as convert  # puts its own gguf-py first on sys.path

try:
    from conversion.base import TextModel as base  # the converter as a package (2025-)
except ImportError:
    base = getattr(convert, "TextModel", None) or convert.Model  # the older single-file converter
stock = base.get_vocab_base_pre

def get_vocab_base_pre(self, tokenizer):
    try:
        return stock(self, tokenizer)
    except NotImplementedError:  # "BPE pre-tokenizer was not recognized"
        if not pre_name:
            sys.exit("BPE pre-tokenizer was not recognized by llama.cpp, and " + why_not)
        return pre_name

base.get_vocab_base_pre = get_vocab_base_pre
sys.argv = ["convert_hf_to_gguf.py", *argv]
convert.main()
"""


def pre_tokenizer_name(folder: Path) -> str:
    """llama.cpp's name for the split regex of tokenizer.json, or one clear line why it has none."""
    tok = json.loads((folder / "tokenizer.json").read_text())
    if (tok.get("model") or {}).get("type") != "BPE":
        raise ConfigError("gguf: only byte-level BPE tokenizers are converted with a forced pre-tokenizer")
    if tok.get("normalizer"):
        raise ConfigError("gguf: tokenizer.json has a normalizer, which llama.cpp's BPE path does not apply")
    pre = tok.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    regexes = [(s.get("pattern") or {}).get("Regex") for s in steps if s.get("type") == "Split"]
    if regexes == [QWEN2_SPLIT_REGEX] and steps[-1].get("type") == "ByteLevel" and not steps[-1].get("use_regex"):
        return "qwen2"
    raise ConfigError("gguf: the tokenizer's pre-tokenizer is not Qwen2's split regex + ByteLevel(use_regex=false); "
                      "llama.cpp would split text differently")


def find_llama_cpp(llama_cpp_dir: str | None) -> Path:
    found = llama_cpp_dir or os.environ.get("LLAMA_CPP_DIR")
    if not found or not (Path(found) / "convert_hf_to_gguf.py").is_file():
        raise ConfigError("gguf: needs llama.cpp's convert_hf_to_gguf.py: set llama_cpp_dir or LLAMA_CPP_DIR to a "
                          "llama.cpp checkout (README: GGUF)")
    return Path(found)


def convert_to_gguf(folder: Path, llama_cpp_dir: str | None, outtype: str) -> Path:
    """Write <folder>/model-<outtype>.gguf from the exported folder; returns its path."""
    llama_cpp = find_llama_cpp(llama_cpp_dir)
    try:  # needed only if llama.cpp does not know the tokenizer's hash
        pre_name, why_not = pre_tokenizer_name(folder), ""
    except ConfigError as e:
        pre_name, why_not = "", str(e).removeprefix("gguf: ")
    out = folder / f"model-{outtype}.gguf"
    cmd = [sys.executable, "-c", _WRAPPER, str(llama_cpp), pre_name, why_not, str(folder), "--outfile", str(out),
           "--outtype", outtype]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0 or not out.is_file():
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise ConfigError(f"gguf: convert_hf_to_gguf.py failed: {last}")
    return out
