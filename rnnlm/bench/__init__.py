"""Benchmarks: each prints a table and updates its section of docs/BENCHMARKS.md.

``make bench`` runs them all; ``python -m rnnlm.bench.<name> --quick`` checks one runs (no doc update).
"""
