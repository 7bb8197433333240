"""The optimizer and the learning-rate schedule of the training loop (:mod:`model.training.trainer`)."""

from __future__ import annotations

import math
from typing import Protocol

import torch
from torch import nn

from model.training.config import TrainConfig


class Schedule(Protocol):
    """What :func:`lr_at` reads of a config (a ``TrainConfig``)."""

    @property
    def lr(self) -> float: ...
    @property
    def warmup_steps(self) -> int: ...
    @property
    def min_lr_ratio(self) -> float: ...


def lr_at(progress: float, step: int, cfg: Schedule) -> float:
    """Linear warm-up over ``warmup_steps``, then cosine from ``lr`` to ``lr * min_lr_ratio``
    as ``progress`` (the share of the budget used) goes from 0 to 1."""
    warm = min(1.0, (step + 1) / max(cfg.warmup_steps, 1))
    cosine = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return cfg.lr * warm * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


def adamw(net: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with decoupled weight decay on the matrices only (not on biases and gains)."""
    decay = [p for p in net.parameters() if p.dim() >= 2]
    rest = [p for p in net.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.99))


def make_optimizer(net: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The run's optimizer: AdamW (weight decay on matrices) or plain SGD."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(net.parameters(), lr=cfg.lr)
    if cfg.optimizer == "adamw":
        return adamw(net, cfg.lr, cfg.weight_decay)
    raise ValueError(f"optimizer must be adamw or sgd, got {cfg.optimizer!r}")
