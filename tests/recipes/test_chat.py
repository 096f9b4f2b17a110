"""recipes/chat.py (make chat): driven through a pseudo-terminal as a user types, it streams greedy answers equal to
model.generate on the same conversation, the second turn sees the first, /clear forgets, /exit leaves with code 0;
an adapter is applied to its base."""

import io
import os
import select
import subprocess
import sys
import time

import pytest
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

import recipes.chat
from testkit import REPO_ROOT, greedy_ids

PROMPT = ">>> "
GREEDY = ["--do_sample", "false", "--max_new_tokens", "16", "--repetition_penalty", "1.0"]


class Terminal:
    """A process on a pseudo-terminal: what it prints is read as a user sees it (the typed line echoed)."""

    def __init__(self, argv):
        master, slave = os.openpty()
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, cwd=REPO_ROOT,
                                     start_new_session=True, env={**os.environ, "TERM": "dumb"})
        os.close(slave)
        self.fd, self.seen = master, ""

    def read_until(self, marker: str, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while marker not in self.seen:
            ready, _, _ = select.select([self.fd], [], [], max(0.0, deadline - time.monotonic()))
            assert ready, f"no {marker!r} within {timeout} s; the terminal shows: {self.seen[-2000:]!r}"
            try:
                self.seen += os.read(self.fd, 4096).decode("utf-8", "replace").replace("\r\n", "\n")
            except OSError:  # the process closed the terminal
                break
        text, _, self.seen = self.seen.partition(marker)
        return text

    def say(self, line: str) -> str:
        """Type a line; returns what is printed before the next prompt, without the echoed line."""
        os.write(self.fd, (line + "\n").encode())
        self.read_until(line + "\n")
        return self.read_until(PROMPT)


def greedy(model, tokenizer, messages) -> str:
    return tokenizer.decode(greedy_ids(model, tokenizer, messages, 16), skip_special_tokens=True)


@pytest.mark.slow  # a new interpreter (imports: ~7 s) on a pseudo-terminal, as a user runs it
def test_two_turns_clear_and_exit_in_a_terminal(tiny_chat_model_dir):
    term = Terminal([sys.executable, str(REPO_ROOT / "recipes/chat.py"), "--config", "configs/chat/tiny.yaml",
                     "--model_name_or_path", str(tiny_chat_model_dir), *GREEDY])
    try:
        banner = term.read_until(PROMPT)
        assert "greedy; stops at </s>, <|im_end|>" in banner and "/exit" in banner, banner
        first = term.say("Hello there")
        second = term.say("And in Chinese?")
        assert term.say("/clear").strip() == "(conversation cleared)"
        again = term.say("And in Chinese?")
        os.write(term.fd, b"/exit\n")
        assert term.proc.wait(timeout=60) == 0
    finally:
        term.proc.kill()
        os.close(term.fd)

    model = AutoModelForCausalLM.from_pretrained(tiny_chat_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_chat_model_dir)
    u1, u2 = {"role": "user", "content": "Hello there"}, {"role": "user", "content": "And in Chinese?"}
    a1 = greedy(model, tokenizer, [u1])
    assert first == a1 + "\n"
    # the second turn is answered with the first exchange in the prompt, and without it after /clear
    assert second == greedy(model, tokenizer, [u1, {"role": "assistant", "content": a1}, u2]) + "\n"
    assert again == greedy(model, tokenizer, [u2]) + "\n" != second


def test_an_adapter_is_applied_to_its_base(lora_adapter, tiny_chat_model_dir):
    args = recipes.chat.make_parser().parse(["--config", str(REPO_ROOT / "configs/chat/tiny.yaml"),
                                             "--model_name_or_path", str(lora_adapter), *GREEDY])[0]
    model, tokenizer = recipes.chat.load(args)
    messages = [{"role": "user", "content": "Hello there"}]
    shown = io.StringIO()
    text = recipes.chat.answer(model, tokenizer, messages, shown)
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_chat_model_dir), str(lora_adapter))
    assert text == greedy(peft.eval(), tokenizer, messages) != greedy(
        AutoModelForCausalLM.from_pretrained(tiny_chat_model_dir).eval(), tokenizer, messages)
    assert shown.getvalue() == text + "\n"


def test_an_adapter_stops_at_its_end_of_turn_whatever_its_base_says(lora_adapter, tiny_chat_model_dir, tmp_path):
    """A pretrained base's generation_config knows only its eos; the adapter's template ends a turn with <|im_end|>."""
    import json
    import shutil

    base, adapter = tmp_path / "base", tmp_path / "adapter"
    shutil.copytree(tiny_chat_model_dir, base)
    shutil.copytree(lora_adapter, adapter)
    tokenizer = AutoTokenizer.from_pretrained(base)
    (base / "generation_config.json").write_text(json.dumps({"eos_token_id": tokenizer.eos_token_id}))
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**config, "base_model_name_or_path": str(base)}))
    args = recipes.chat.make_parser().parse(["--model_name_or_path", str(adapter), *GREEDY])[0]
    model, _ = recipes.chat.load(args)
    assert model.generation_config.eos_token_id == [tokenizer.eos_token_id,
                                                    tokenizer.convert_tokens_to_ids("<|im_end|>")]
