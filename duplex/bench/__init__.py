"""Benchmarks: each module has ``run(cfg, **options) -> dict`` of machine-readable figures.

Figures are medians over repeats (shared machines are noisy); each result records the repeats
and the machine's CPU count so numbers can be compared honestly.
"""
