"""The run report of recipes/report.py: read a run folder's files (TensorBoard events, JSON reports, resolved configs)
and turn them into one Markdown page with PNGs; never the data, never a model."""
