"""The per-document steps; importing this package registers them all by name (see base.STEPS)."""

from data_prep.steps import clean, langid, pii, quality  # noqa: F401
from data_prep.steps.base import STEPS, DocStep, StepParams, build_step, describe_steps, parse_step_spec, step_name_of

__all__ = ["STEPS", "DocStep", "StepParams", "build_step", "describe_steps", "parse_step_spec", "step_name_of"]

# The corpus-wide steps (dedup, augment) register their parameters too, so YAML is checked the same way.
from data_prep import dedup, split  # noqa: E402,F401
