"""make export / make push: the Hub-ready folder (transformers 4/5 files, card, recipe lineage, leak check), GGUF."""
