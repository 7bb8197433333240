"""Combining two models' per-token log-probs: the linear mixture and the log-linear score.

Both work on log-probs already computed for the same token sequences, so a mixture can be
measured (and its weight tuned) without running either model again:

* linear mixture, per token: ``P = λ P_a + (1 - λ) P_b``. It is a normalized language model
  (:class:`model.models.mixture.MixtureLanguageModel` computes exactly this), so it has a perplexity;
  λ is tuned on held-out text with :func:`model.models.mixture.tune_lambda`.
* log-linear score, per sentence: ``α log P_a + (1 - α) log P_b``. Not normalized (no
  perplexity), but the way recognizers weight several scores (the LM term of the rescoring
  formula with two models, :func:`model.inference.formula.weighted_sum`); α is tuned for
  reranking accuracy on held-out confusion sets.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from model.inference.formula import weighted_sum
from model.quality.confusion import RerankItem
from model.quality.rerank import RerankResult

WEIGHT_GRID = tuple(round(0.05 * i, 2) for i in range(21))  # 0, 0.05, ..., 1


def mix_logprobs(a: torch.Tensor, b: torch.Tensor, lam: float) -> torch.Tensor:
    """Per-token ``log(λ e^a + (1 - λ) e^b)``; λ = 1 gives ``a``, λ = 0 gives ``b``."""
    if lam >= 1:
        return a.clone()
    if lam <= 0:
        return b.clone()
    return torch.logaddexp(a + math.log(lam), b + math.log1p(-lam))


def loglinear_logprobs(a: torch.Tensor, b: torch.Tensor, alpha: float) -> torch.Tensor:
    """Per-token ``α a + (1 - α) b``: summed over a sentence, the log-linear score."""
    return alpha * a + (1 - alpha) * b


def sentence_scores(per_token: Sequence[Sequence[torch.Tensor]]) -> list[list[float]]:
    """Per item, per candidate: the sum of its per-token scores."""
    return [[float(t.sum()) for t in cands] for cands in per_token]


PerToken = Sequence[Sequence[torch.Tensor]]  # per item, per candidate: per-token log-probs


def tune_loglinear_weight(
    sets: dict[str, Sequence[RerankItem]],
    a: dict[str, PerToken],
    b: dict[str, PerToken],
    grid: Sequence[float] = WEIGHT_GRID,
) -> float:
    """The α of the grid with the best mean top-1 over the given (held-out) sets, then the best MRR.

    Equal results go to the α nearest 0.5, so a flat objective does not push to either model.
    """
    totals_a = {k: sentence_scores(v) for k, v in a.items()}
    totals_b = {k: sentence_scores(v) for k, v in b.items()}

    def objective(alpha: float) -> tuple[float, float, float]:
        top1, rr = [], []
        mix = {"a": alpha, "b": 1 - alpha}
        for key, items in sets.items():
            scores = [
                [weighted_sum({"a": x, "b": y}, mix) for x, y in zip(sa, sb, strict=True)]
                for sa, sb in zip(totals_a[key], totals_b[key], strict=True)
            ]
            result = RerankResult.from_scores(items, scores)
            top1 += result.top1
            rr += result.reciprocal_rank
        return float(np.mean(top1)), float(np.mean(rr)), -abs(alpha - 0.5)

    return max(grid, key=objective)
