"""The recipes: each module is a script (`python recipes/<name>.py` or `accelerate launch`) with a `main(argv)` that
tests and benchmarks import as `from recipes import <name>`."""
