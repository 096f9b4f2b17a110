"""make eval: scoring (log-likelihood, classification, generation), its data, its report, lm-evaluation-harness."""
