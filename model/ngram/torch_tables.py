"""The backoff tables of :mod:`model.ngram.tables` as torch tensors, on any device.

The numpy :class:`~model.ngram.tables.BackoffTables` serve one request at a time on the CPU. Training
a hybrid model (:mod:`model.hybrid`) needs the n-gram's *whole* next-token distribution at every
position of every batch, thousands of rows at once, on the GPU when there is one. This is the same
algorithm, line for line, in torch::

    histories (N, order-1) ─▶ context index per order (N, order-1)
                           ─▶ 1-gram row, then for each longer context present:
                              add ln b(context) everywhere, overwrite the tokens it has seen
                           ─▶ ln P(w | history) (N, V)

Tests check it against the numpy version on the same tables.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..tokenizer import BOS_ID, PAD_ID
from .tables import BackoffTables


class TorchBackoffTables:
    """One or several tables (same vocabulary and order) on a device.

    Several tables are stacked into one, so a batch whose rows need different tables (the
    held-out folds of :mod:`model.fit`) is looked up in one pass: table g's n-grams get indices
    after those of tables 0..g-1, and its 1-gram for token t is row ``g·V + t``.
    """

    def __init__(
        self, tables: BackoffTables | list[BackoffTables], device: torch.device | str = "cpu"
    ) -> None:
        group = tables if isinstance(tables, list) else [tables]
        first = group[0]
        if any(t.vocab_size != first.vocab_size or t.order != first.order for t in group):
            raise ValueError("stacked tables need one vocabulary and one order")
        self.vocab_size, self.order, self.groups = first.vocab_size, first.order, len(group)
        V = self.vocab_size
        # offset[m][g]: where table g's order-(m+1) entries start in the stacked order-(m+1) table
        offset = [[g * V for g in range(len(group))]]
        for m in range(1, self.order):
            sizes = [len(t.keys[m]) for t in group]
            offset.append([sum(sizes[:g]) for g in range(len(group))])
        keys = [torch.cat([torch.from_numpy(t.keys[0]) + offset[0][g] for g, t in enumerate(group)])]
        for m in range(1, self.order):  # order m+1: key = stacked prefix index * V + token
            parts = []
            for g, t in enumerate(group):
                k = torch.from_numpy(t.keys[m])
                parts.append((k // V + offset[m - 1][g]) * V + k % V)
            keys.append(torch.cat(parts))
        self.keys = [k.to(device) for k in keys]
        self.logprob = [
            torch.cat([torch.from_numpy(t.logprob[n]).float() for t in group]).to(device)
            for n in range(self.order)
        ]
        self.logbackoff = [
            torch.cat([torch.from_numpy(t.logbackoff[n]).float() for t in group]).to(device)
            for n in range(self.order - 1)
        ]

    def find(self, n: int, prefix: Tensor, token: Tensor) -> Tensor:
        """Index of the n-gram ``prefix-ngram + token`` in order n (n >= 2), or -1 if absent."""
        keys = self.keys[n - 1]
        if len(keys) == 0:
            return torch.full_like(prefix, -1)
        wanted = prefix * self.vocab_size + token
        at = torch.searchsorted(keys, wanted).clamp_(max=len(keys) - 1)
        found = (prefix >= 0) & (keys[at] == wanted)
        return torch.where(found, at, torch.full_like(at, -1))

    def context_indices(self, histories: Tensor, group: Tensor | None = None) -> Tensor:
        """(N, W) histories, left-padded with ``<pad>`` -> (N, W): column n-1 is the index of the
        history's last n tokens in order n, or -1. ``group`` (N,) picks each row's table."""
        n_rows, width = histories.shape
        real = histories != PAD_ID
        first = histories if group is None else histories + group.unsqueeze(1) * self.vocab_size
        ending = torch.where(real, first, torch.full_like(histories, -1))  # order 1, (N, W)
        columns = [ending[:, -1]]
        for n in range(2, width + 1):
            longer = torch.full_like(ending, -1)
            longer[:, 1:] = self.find(n, ending[:, :-1], histories[:, 1:])
            longer[:, 1:] = torch.where(real[:, 1:], longer[:, 1:], torch.full_like(longer[:, 1:], -1))
            ending = longer
            columns.append(ending[:, -1])
        return torch.stack(columns, dim=1) if columns else histories.new_zeros((n_rows, 0))

    def next_logprobs(self, histories: Tensor, group: Tensor | None = None) -> Tensor:
        """(N, V) float32 ln P(w | history) for every token w (see the module docstring);
        ``group`` (N,) picks each row's table when several are stacked (default: the first)."""
        n_rows = histories.size(0)
        V = self.vocab_size
        if group is None:
            logp = self.logprob[0][:V].expand(n_rows, V).clone()  # (N, V)
        else:
            logp = self.logprob[0].view(self.groups, V)[group]  # (N, V)
        if self.order > 1:
            contexts = self.context_indices(histories, group)  # (N, order-1)
            for n in range(2, self.order + 1):
                context = contexts[:, n - 2]
                rows = torch.nonzero(context >= 0).squeeze(1)
                if rows.numel() == 0:
                    continue
                ctx = context[rows]
                logp[rows] += self.logbackoff[n - 2][ctx].unsqueeze(1)
                keys = self.keys[n - 1]
                lo = torch.searchsorted(keys, ctx * V)
                hi = torch.searchsorted(keys, (ctx + 1) * V)
                sizes = hi - lo
                total = int(sizes.sum())
                if total == 0:
                    continue
                row_of = torch.repeat_interleave(rows, sizes)
                first = torch.repeat_interleave(lo - torch.cumsum(sizes, 0) + sizes, sizes)
                entry = first + torch.arange(total, device=keys.device)
                token = keys[entry] - context[row_of] * V
                logp[row_of, token] = self.logprob[n - 1][entry]
        logp[:, [PAD_ID, BOS_ID]] = float("-inf")
        return logp


def histories_of(stream: Tensor, position: Tensor, width: int) -> Tensor:
    """(N, width) left-padded histories of a token stream, cut at sentence starts.

    ``stream`` (N,) holds input tokens, ``position`` (N,) each token's index in its sentence
    (``<bos>`` is 0). Row i is ``stream[i-width+1 .. i]`` with ``<pad>`` where that reaches back past
    the start of token i's sentence: the history an n-gram of order ``width + 1`` conditions on.
    """
    cols = []
    for back in range(width - 1, -1, -1):
        shifted = torch.roll(stream, back)
        cols.append(torch.where(position >= back, shifted, torch.full_like(stream, PAD_ID)))
    return torch.stack(cols, dim=1) if cols else stream.new_zeros((len(stream), 0))
