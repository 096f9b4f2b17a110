"""The corpus pipeline: clean, filter, language ID, PII, dedup, augment and split raw text into train/validation/test.

Every stage is a datatrove pipeline step, so the same YAML runs on a laptop (`executor: local`), a Ray cluster
(`executor: ray`) or Slurm (`executor: slurm`). Entry point: `python -m data_prep --config configs/data/<recipe>.yaml`.
"""
