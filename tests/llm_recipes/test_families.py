"""A family's own chat template, on the real tokenizers of Llama 3.1, Qwen 2.5 and Llama 2 (../shared/models/):
where it stops (its end of turn, then its eos), which template masks SFT's assistant-only loss, and that a training
template renders exactly the text of the original, so that a model trained with it answers to the original."""

import pytest
from transformers import AutoTokenizer

from llm_recipes.config import ConfigError
from llm_recipes.tokenizer import masking_template, stop_token_ids, tokenizing_quietly
from testkit import FAMILIES, MODELS_DIR, SYSTEM, TURNS
from testkit import FAMILY_EXPECTED as EXPECTED


@pytest.fixture(scope="module")
def tokenizers():
    return {family: AutoTokenizer.from_pretrained(MODELS_DIR / family) for family in FAMILIES}


def training_template(tokenizer, family):
    from trl.chat_template_utils import get_training_chat_template

    return masking_template(tokenizer, family) or get_training_chat_template(tokenizer)


@pytest.mark.parametrize("family", FAMILIES)
def test_generation_stops_at_the_familys_end_of_turn_and_eos(family, tokenizers):
    tokenizer = tokenizers[family]
    assert tokenizer.convert_ids_to_tokens(stop_token_ids(tokenizer)) == EXPECTED[family][0]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("system", [True, False], ids=["system", "no-system"])
def test_training_template_renders_the_original_text(family, system, tokenizers):
    tokenizer = tokenizers[family]
    template = training_template(tokenizer, family)
    assert template is not None and template != tokenizer.chat_template
    conversation = [SYSTEM, *TURNS] if system else TURNS
    for messages, prompt in ((conversation, False), (conversation[:2], False), (conversation[:-1], True)):
        render = dict(tokenize=False, add_generation_prompt=prompt)
        assert (tokenizer.apply_chat_template(messages, chat_template=template, **render)
                == tokenizer.apply_chat_template(messages, **render))


@pytest.mark.parametrize("family", FAMILIES)
def test_assistant_mask_covers_each_answer_and_its_end_of_turn(family, tokenizers):
    tokenizer = tokenizers[family]
    out = tokenizer.apply_chat_template([SYSTEM, *TURNS], chat_template=training_template(tokenizer, family),
                                        return_dict=True, return_assistant_tokens_mask=True)
    spans, span = [], []
    for token, masked in zip(out["input_ids"], out["assistant_masks"]):
        if masked:
            span.append(token)
        elif span:
            spans.append(span)
            span = []
    spans += [span] if span else []
    assert [tokenizer.decode(s) for s in spans] == EXPECTED[family][1]


def test_the_swap_lasts_while_the_data_is_tokenized_and_the_original_is_kept(tokenizers):
    tokenizer = tokenizers["llama3"]
    original, template = tokenizer.chat_template, masking_template(tokenizer, "llama3")
    with tokenizing_quietly(tokenizer, template):
        assert tokenizer.chat_template == template
    assert tokenizer.chat_template == original


def test_a_template_without_markers_or_a_known_variant_names_the_fix():
    tokenizer = AutoTokenizer.from_pretrained(MODELS_DIR / "llama2-spm")  # a copy to change
    tokenizer.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    with pytest.raises(ConfigError, match="chat_template_path"):
        masking_template(tokenizer, "my-model")


def test_a_chat_tokenizer_drops_its_python_vocabulary_copy_and_saves_the_same_files(tmp_path):
    """Qwen's tokenizer class keeps a 150k-entry vocabulary and 290k merges in Python after building its backend;
    `datasets` pickled them to fingerprint every map of an SFT run. Without them the saved files are the same."""
    from llm_recipes.tokenizer import load_chat_tokenizer

    tokenizer = load_chat_tokenizer(str(MODELS_DIR / "qwen2"))
    assert "_vocab" not in tokenizer.__dict__ and "_merges" not in tokenizer.__dict__
    tokenizer.save_pretrained(tmp_path / "light")
    AutoTokenizer.from_pretrained(MODELS_DIR / "qwen2").save_pretrained(tmp_path / "as-loaded")
    for path in (tmp_path / "as-loaded").iterdir():
        assert (tmp_path / "light" / path.name).read_bytes() == path.read_bytes(), path.name
