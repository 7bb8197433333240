"""Inference: sampling, generation, text-level scoring and the serving engine.

Imports ``model.models`` and ``model.text``; never ``model.training``.
"""
