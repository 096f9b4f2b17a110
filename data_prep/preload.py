"""Imported once by the local executor's fork server (data_prep/pipeline.py) before it forks the workers: what each
worker would otherwise load on its first document, loaded once and shared by every fork of every stage."""

import data_prep.pipeline  # noqa: F401  (the steps and the pipeline)
from data_prep.text import split_words, words_of

split_words("warm")  # spaCy's English tokenizer rules: importing spaCy is ~1.4 s of a core
words_of("预热", "zh")  # jieba's dictionary: ~0.7 s
