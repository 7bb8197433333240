"""Training: the loop and its schedule, budgets, optimizers, adaptation and model cards.

Everything that changes a model's weights or counts lives here; the service never imports it.
"""
