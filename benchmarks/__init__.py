"""Benchmarks: one script per benchmark, JSON results in benchmarks/results/."""
