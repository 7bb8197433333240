"""The rescoring formula and the ranking: the one place a candidate's total is written.

::

    total = lm_weight × lm + first_pass_weight × first_pass + length_bonus × length + hotwords

* ``lm``, the LM term: one model's log-prob of the candidate (with ``normalize="token"``, its
  mean per scored token), or for several models ``Σ_m weight_m × logprob_m`` (:func:`weighted_sum`);
* ``first_pass``: the candidate's first-pass (external) score, log domain, higher is better;
* ``length``: its length in a length unit (:func:`model.inference.scoring.text_length`);
* ``hotwords``: what the listed phrases add (:func:`hotword_bonus`).

Every caller computes its totals here: ``POST /score`` (one model through
:func:`model.inference.scoring.combine_scores`, several in ``service/rescoring.py``), ``rnnlm
rescore`` (:class:`model.rescoring.combine.Weights`), ``rnnlm tune`` (:mod:`model.rescoring.tune`,
over arrays) and the ``/score`` sweep (:func:`sweep`). :meth:`Formula.total` is one expression of
``*`` and ``+``, so it runs as it is on floats, NumPy arrays and torch tensors, and weights that
are arrays broadcast against the candidates: the vectorized forms are this formula, not copies.
With a weight of 1 and no hotwords a term adds nothing, bit for bit (``1.0 × x == x``,
``x + 0.0 == x``), so the callers that have no such term get the numbers they always had.

Candidates are ranked by total, best first; equal totals keep their input order (:func:`rank`).

It lives in ``model.inference``, below ``model.rescoring``, because the score a single model's
scoring returns (:func:`~model.inference.scoring.combine_scores`, which the batching engine's
scoring shares) is this formula, and inference may not import rescoring.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

Values = Any  # a float, or a NumPy array / torch tensor of them (broadcast against each other)


@dataclass(frozen=True)
class Formula:
    """The weights of the formula (floats; arrays of them to evaluate many settings at once)."""

    lm_weight: Values = 1.0  # multiplies the LM term
    first_pass_weight: Values = 1.0  # multiplies the first-pass (external) score
    length_bonus: Values = 0.0  # added per unit of length (a word-insertion bonus; negative = penalty)

    def total(
        self, lm: Values, first_pass: Values = 0.0, length: Values = 0.0, hotwords: Values = 0.0
    ) -> Values:
        """The candidate's total (higher is better), summed in this order."""
        return (
            self.lm_weight * lm + self.first_pass_weight * first_pass + self.length_bonus * length + hotwords
        )


def weighted_sum(logprobs: Mapping[str, float], model_weights: Mapping[str, float]) -> float:
    """The LM term of several models: ``Σ_m model_weights[m] × logprobs[m]`` (exactly rounded);
    a model without a weight is left out."""
    return math.fsum(w * logprobs[m] for m, w in model_weights.items())


def hotword_bonus(text: str, hotwords: Sequence[tuple[str, float]]) -> float:
    """Contextual biasing (as WeNet's and icefall's context graphs reward a listed phrase): each
    occurrence of a phrase in ``text`` (non-overlapping, counted as ``str.count`` does) adds its bonus."""
    return math.fsum(bonus * text.count(phrase) for phrase, bonus in hotwords)


def rank(totals: Sequence[float]) -> list[int]:
    """Candidate indices, best (highest) first; equal totals keep their input order."""
    return sorted(range(len(totals)), key=lambda i: -totals[i])


@dataclass
class SweepBest:
    lm_weight: float
    length_bonus: float
    best: int  # index of the best candidate under this pair (the first, among equal scores)
    score: float  # its score


def sweep(
    lm_terms: Sequence[float],
    external: Sequence[float],
    lengths: Sequence[float],
    pairs: Sequence[tuple[float, float]],
) -> list[SweepBest]:
    """The best candidate under each (lm_weight, length_bonus) pair: :meth:`Formula.total` with
    ``first_pass = external`` (everything no pair varies: the weighted first pass and the hotwords),
    the LM never called again. One (P, C) array of float64, so a thousand pairs over a thousand
    candidates take milliseconds."""
    if not (len(lm_terms) == len(external) == len(lengths)) or not lm_terms:
        raise ValueError("sweep needs one LM term, external score and length per candidate, and a candidate")
    if not pairs:
        return []
    lm = torch.tensor(lm_terms, dtype=torch.float64)  # (C,)
    ext = torch.tensor(external, dtype=torch.float64)  # (C,)
    length = torch.tensor(lengths, dtype=torch.float64)  # (C,)
    w = torch.tensor(pairs, dtype=torch.float64)  # (P, 2)
    scores = Formula(lm_weight=w[:, :1], length_bonus=w[:, 1:]).total(lm, ext, length)  # (P, C)
    best = scores.argmax(dim=1)  # (P,): the first maximal index
    top = scores.gather(1, best[:, None])[:, 0]  # (P,)
    return [
        SweepBest(lm_weight=float(lw), length_bonus=float(lb), best=int(b), score=float(s))
        for (lw, lb), b, s in zip(pairs, best.tolist(), top.tolist(), strict=True)
    ]
