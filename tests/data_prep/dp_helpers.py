"""Helpers for the data_prep tests: steps run on single documents through their counting run loop."""

from datatrove.data import Document

from data_prep.steps import STEPS


def make_step(name: str, **params):
    cls = STEPS[name]
    return cls(cls.Params(**params))


def apply(step, text: str, language: str | None = "en", **meta):
    """Run one step on one document through its counting run loop: the kept text, or None when dropped."""
    metadata = {"language": language, **meta} if language else dict(meta)
    out = list(step.run(iter([Document(text=text, id="t", metadata=metadata)])))
    return out[0].text if out else None


def reason(step, text: str, language: str = "en"):
    """The drop reason of a rule step (None = kept)."""
    return step.process(Document(text=text, id="t", metadata={"language": language}))
