"""The network a run trains and the one loss every kind of it is trained on.

Three kinds train through one objective, so they are compared on equal terms: ``rnn``,
``hybrid`` (an RNN learning the residual over a Kneser-Ney n-gram, :mod:`model.models.hybrid`)
and ``window`` (Bengio's fixed-window model, :mod:`model.models.window`). A hybrid's train
positions see an n-gram counted without their own fold of sentences (as they will see text the
n-gram never counted); validation uses the n-gram of all of train.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.models.config import ModelConfig
from model.models.ngram.torch_tables import TorchBackoffTables
from model.text.tokenizer import PAD_ID, Tokenizer
from model.training.config import TrainConfig, TrainJob
from model.training.data import Corpus


def build_net(kind: str, model: dict[str, Any], vocab_size: int) -> nn.Module:
    """A fresh network of ``kind`` from its architecture fields (no vocab_size)."""
    if kind == "window":
        from model.models.window import WindowConfig, WindowNet

        return WindowNet(WindowConfig(vocab_size=vocab_size, **model))
    config = ModelConfig(vocab_size=vocab_size, **model)
    if kind == "hybrid":
        from model.models.hybrid import HybridNet

        return HybridNet(config)
    from model.models.network import RNNLM

    return RNNLM(config)


def history_width(cfg: TrainConfig, net: nn.Module) -> int:
    """Tokens of history each position needs besides the recurrent state (0 for an rnn)."""
    if cfg.kind == "window":
        return int(getattr(net.config, "context", 0))
    return cfg.ngram_order - 1 if cfg.kind == "hybrid" else 0


class Objective(nn.Module):
    """Summed cross-entropy of a batch of positions, whatever the kind of model."""

    def __init__(
        self,
        net: nn.Module,
        kind: str,
        width: int,
        fold_tables: TorchBackoffTables | None = None,
        full_tables: TorchBackoffTables | None = None,
    ) -> None:
        super().__init__()
        self.net: Any = net  # RNNLM | HybridNet | WindowNet (their kind-specific methods are used)
        self.kind, self.width = kind, width
        self.fold_tables, self.full_tables = fold_tables, full_tables

    def forward(
        self, x: Tensor, y: Tensor, hist: Tensor | None, fold: Tensor | None, state: Tensor | None
    ) -> tuple[Tensor, int, Tensor | None]:
        """x, y (B, T); hist (B, T, W) n-gram/window histories; fold (B, T) or None (use the
        full n-gram). Returns (sum of -log P over non-pad targets, their count, new state)."""
        mask = y != PAD_ID  # (B, T)
        targets = y[mask]  # (M,)
        if self.kind == "window":
            assert hist is not None
            logits = self.net.output(self.net.features(hist[mask]))  # (M, V)
        else:
            rnn = self.net.rnn if self.kind == "hybrid" else self.net
            feats, state = rnn.hidden(x, state)  # (B, T, D)
            picked = feats[mask]  # (M, D)
            if self.kind == "hybrid":
                assert hist is not None
                logits = self.net.combine(picked, self._ngram_logprobs(hist[mask], fold, mask))
            else:
                logits = rnn.output(picked)
        loss = F.cross_entropy(logits.float(), targets, reduction="sum")
        return loss, int(targets.numel()), state

    def _ngram_logprobs(self, hist: Tensor, fold: Tensor | None, mask: Tensor) -> Tensor:
        """The n-gram's log-probs: each train position from the model without its fold."""
        with torch.no_grad(), torch.autocast(hist.device.type, enabled=False):
            if fold is None or self.fold_tables is None:
                assert self.full_tables is not None
                return self.full_tables.next_logprobs(hist)
            return self.fold_tables.next_logprobs(hist, fold[mask])


def ngram_tables(
    cfg: TrainConfig,
    tokenizer: Tokenizer,
    seqs: list[list[int]],
    folds: list[int],
    ngram_dir: str,
    device: torch.device,
    say=print,
) -> tuple[TorchBackoffTables | None, TorchBackoffTables]:
    """A hybrid's n-grams on ``device``: one per fold, counted without it (None with 0 folds),
    and the full one, read from ``ngram_dir`` or counted and saved there."""
    from model.models.ngram.model import from_sequences
    from model.models.ngram.store import load_ngram, save_ngram

    prune = cfg.ngram_prune or None  # the fold models are pruned as the full one is
    fold_tables = []
    for k in range(cfg.folds):
        held_in = [s for s, f in zip(seqs, folds, strict=True) if f != k]
        fold_tables.append(from_sequences(tokenizer, held_in, cfg.ngram_order, "kn", prune=prune).tables)
    if ngram_dir and Path(ngram_dir, "config.json").exists():
        full = load_ngram(ngram_dir)
        if full.tokenizer.to_dict() != tokenizer.to_dict() or full.order != cfg.ngram_order:
            raise ValueError(f"{ngram_dir}: not an order-{cfg.ngram_order} n-gram of this vocabulary")
    else:
        full = from_sequences(tokenizer, seqs, cfg.ngram_order, "kn", prune=prune)
        if not ngram_dir:
            raise ValueError("a hybrid needs ngram_dir: where its n-gram is (or will be saved)")
        record = {"model_type": "ngram", "order": cfg.ngram_order, "smoothing": "kn"}
        save_ngram(ngram_dir, full, {**record, "prune": cfg.ngram_prune, "built_by": "rnnlm fit"})
    say(f"n-gram: {cfg.folds} held-out fold models and the full model, order {cfg.ngram_order}")
    folded = TorchBackoffTables(fold_tables, device) if fold_tables else None  # folds 0: the full one
    return folded, TorchBackoffTables(full.tables, device)


def build_objective(
    job: TrainJob, tokenizer: Tokenizer, corpus: Corpus, device: torch.device, say=print
) -> tuple[nn.Module, Objective]:
    """The run's network (fresh, or from ``job.init_from``) and the objective it is trained on."""
    from model.training.checkpointing import load_initial_weights

    cfg = job.train
    net = build_net(cfg.kind, job.model, tokenizer.vocab_size).to(device)
    if job.init_from:
        load_initial_weights(net, cfg.kind, job.init_from, tokenizer, say)
    tables: tuple[TorchBackoffTables | None, TorchBackoffTables | None] = (None, None)
    if cfg.kind == "hybrid":
        tables = ngram_tables(
            cfg, tokenizer, corpus.sentences, corpus.sentence_fold, job.ngram_dir, device, say
        )
    return net, Objective(net, cfg.kind, history_width(cfg, net), *tables)
