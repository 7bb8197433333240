"""A linear-chain CRF over per-position label scores, and the Viterbi search both tagger heads use.

::

    emissions (B, T, L) ─┐
    transitions (L, L)  ─┼─▶ log p(y | x) = score(x, y) - log Z(x)      (training: nll)
    start, end (L)      ─┘   argmax_y score(x, y)                      (decoding: viterbi)

    score(x, y) = start[y_1] + Σ_t emissions[t, y_t] + Σ_t transitions[y_{t-1}, y_t] + end[y_n]

Rows are padded on the right: ``mask`` (B, T) is True on each row's first ``n`` positions
(``n >= 1``), and a padded step changes nothing. Constraints (which label may follow which,
begin or end a sequence) enter as a fixed penalty of :data:`FORBIDDEN` added to the learned
scores, so a forbidden path is never the best one and adds nothing to ``log Z``: a large finite
number rather than ``-inf`` keeps every gradient finite.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

FORBIDDEN = -1.0e4  # added to a transition, start or end score that is not allowed


def penalty(allowed: Tensor) -> Tensor:
    """0 where ``allowed`` (bool), :data:`FORBIDDEN` elsewhere."""
    return torch.where(allowed, 0.0, FORBIDDEN).float()


def viterbi(
    emissions: Tensor, mask: Tensor, transitions: Tensor, start: Tensor, end: Tensor
) -> list[list[int]]:
    """The best label sequence of each row (its first ``mask.sum()`` positions), batched."""
    b, t, n = emissions.shape
    if t == 0:
        return [[] for _ in range(b)]
    score = start + emissions[:, 0]  # (B, L)
    keep = torch.arange(n, device=emissions.device).expand(b, n)  # a padded step points to itself
    history = []
    for i in range(1, t):
        best, back = (score.unsqueeze(2) + transitions).max(1)  # (B, L): from the best predecessor
        step = mask[:, i].unsqueeze(1)  # (B, 1)
        score = torch.where(step, best + emissions[:, i], score)
        history.append(torch.where(step, back, keep))
    last = (score + end).argmax(1)  # (B,)
    path = [last]
    for back in reversed(history):
        last = back.gather(1, last.unsqueeze(1)).squeeze(1)
        path.append(last)
    labels = torch.stack(path[::-1], 1).tolist()  # (B, T)
    lengths = mask.sum(1).tolist()
    return [row[:length] for row, length in zip(labels, lengths, strict=True)]


class LinearChainCRF(nn.Module):
    """Learned transition, start and end scores over ``num_labels`` labels, with the constraints
    ``allowed`` (L, L), ``allowed_start`` (L) and ``allowed_end`` (L) (all allowed if None)."""

    forbidden: Tensor
    forbidden_start: Tensor
    forbidden_end: Tensor

    def __init__(
        self,
        num_labels: int,
        allowed: Tensor | None = None,
        allowed_start: Tensor | None = None,
        allowed_end: Tensor | None = None,
    ) -> None:
        super().__init__()
        n = num_labels
        self.transitions = nn.Parameter(torch.zeros(n, n))  # [from, to]
        self.start = nn.Parameter(torch.zeros(n))
        self.end = nn.Parameter(torch.zeros(n))
        ones = torch.ones(n, dtype=torch.bool)
        self.register_buffer(
            "forbidden", penalty(allowed if allowed is not None else ones.outer(ones)), False
        )
        self.register_buffer(
            "forbidden_start", penalty(allowed_start if allowed_start is not None else ones), False
        )
        self.register_buffer(
            "forbidden_end", penalty(allowed_end if allowed_end is not None else ones), False
        )

    def scores(self) -> tuple[Tensor, Tensor, Tensor]:
        """Transition, start and end scores with the constraints applied."""
        return (
            self.transitions + self.forbidden,
            self.start + self.forbidden_start,
            self.end + self.forbidden_end,
        )

    def log_partition(self, emissions: Tensor, mask: Tensor) -> Tensor:
        """log Z of each row (B,): the forward algorithm."""
        transitions, start, end = self.scores()
        alpha = start + emissions[:, 0]  # (B, L)
        for i in range(1, emissions.size(1)):
            nxt = torch.logsumexp(alpha.unsqueeze(2) + transitions, dim=1) + emissions[:, i]  # (B, L)
            alpha = torch.where(mask[:, i].unsqueeze(1), nxt, alpha)
        return torch.logsumexp(alpha + end, dim=1)

    def path_score(self, emissions: Tensor, labels: Tensor, mask: Tensor) -> Tensor:
        """score(x, y) of each row's ``labels`` (B, T) (padding: any label id, masked out)."""
        transitions, start, end = self.scores()
        labels = labels.masked_fill(~mask, 0)
        m = mask.float()
        emitted = emissions.gather(2, labels.unsqueeze(2)).squeeze(2)  # (B, T)
        score = start[labels[:, 0]] + (emitted * m).sum(1)
        if labels.size(1) > 1:
            steps = transitions[labels[:, :-1], labels[:, 1:]]  # (B, T-1)
            score = score + (steps * m[:, 1:]).sum(1)
        last = labels.gather(1, (mask.sum(1, keepdim=True) - 1).clamp(min=0)).squeeze(1)
        return score + end[last]

    def nll(self, emissions: Tensor, labels: Tensor, mask: Tensor) -> Tensor:
        """-log p(labels | x) of each row (B,)."""
        emissions = emissions.float()
        return self.log_partition(emissions, mask) - self.path_score(emissions, labels, mask)

    def decode(self, emissions: Tensor, mask: Tensor) -> list[list[int]]:
        return viterbi(emissions.float(), mask, *self.scores())
