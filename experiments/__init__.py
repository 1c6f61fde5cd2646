"""Sweep runners that regenerate the papers' tables and plots from workdirs.

Run from the repository root (the configs are files under `configs/`):
`python -m experiments.run <sweep>` trains (or `--print`s) a named sweep of
`experiments.sweeps`, `python -m experiments.collect <sweep>` turns its
workdirs into a markdown table next to the paper's numbers
(`experiments.paper_numbers`) and an accuracy-vs-MACs PNG.
"""
