"""Search the rescoring weights that minimize the corpus error on a dev set (no model calls).

Every candidate's first-pass score, per-model log-probs, length and errors against the reference
are computed once and held as arrays (U utterances × N candidates, padded); an evaluation of a
weight vector is then one tensor expression and an argmax per utterance::

    totals = F × score + logprobs @ w + b × length        (U, N)   -inf where padded (Formula.total)
    choice = argmax(totals)                                (U,)     ties: the earlier candidate
    error  = Σ errors[u, choice[u]] / Σ reference length

``first_pass_weight`` F stays fixed at 1, the usual convention (Kaldi, ESPnet and NeMo all weigh
the LM against a first pass of weight 1; only the ratios change the ranking, so one weight can
be fixed without losing anything, as long as the LM weights may grow large). The free weights
are each model's weight and the length bonus. The search:

1. a coarse grid over the model weights (each in ``GRID``; jointly for up to three models, one
   at a time beyond) and the length bonus (``BONUS_GRID``);
2. coordinate descent from the best grid point: each weight in turn tries ``current + k × step``
   (k = -8..8) and moves to the middle of the longest stretch of values with the fewest errors
   (the objective is flat between the points where some 1-best changes; the middle of a flat
   stretch is the setting least likely to sit on its edge for other data); when a sweep lowers
   the error nowhere, the step halves, down to ``MIN_STEP``.

It starts from (and so never ends worse than) the first pass alone (all model weights 0, no
bonus). Every choice is deterministic: candidates are tried in a fixed order and ties keep the
earlier (smaller) setting.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from model.inference.formula import Formula
from model.rescoring.combine import CandidateScores, Weights, text_length
from model.rescoring.errors import candidate_errors
from model.rescoring.formats import Utterance

GRID = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0)
BONUS_GRID = (-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0)
START_STEP = 0.25
MIN_STEP = 1 / 64
MAX_SWEEPS = 200


@dataclass
class TuneProblem:
    """The dev set as arrays; row u is one utterance, padded to N candidates."""

    scores: np.ndarray  # (U, N) first-pass scores
    logprobs: np.ndarray  # (U, N, M) each model's log-prob
    lengths: np.ndarray  # (U, N) length in the chosen unit
    errors: np.ndarray  # (U, N) edit errors (or 0/1 for accuracy) against the reference
    valid: np.ndarray  # (U, N) False where padded
    total: int  # reference length summed (utterances for accuracy)

    @classmethod
    def build(
        cls,
        scores: Sequence[Sequence[float]],
        logprobs: Sequence[Sequence[Sequence[float]]],
        lengths: Sequence[Sequence[int]],
        errors: Sequence[Sequence[int]],
        total: int,
    ) -> TuneProblem:
        u = len(scores)
        n = max((len(r) for r in scores), default=1)
        m = len(logprobs[0][0]) if u and logprobs[0] else 0
        arr = {
            "scores": np.zeros((u, n)),
            "logprobs": np.zeros((u, n, m)),
            "lengths": np.zeros((u, n)),
            "errors": np.zeros((u, n), dtype=np.int64),
            "valid": np.zeros((u, n), dtype=bool),
        }
        for i in range(u):
            k = len(scores[i])
            arr["scores"][i, :k] = scores[i]
            if m:
                arr["logprobs"][i, :k] = logprobs[i]
            arr["lengths"][i, :k] = lengths[i]
            arr["errors"][i, :k] = errors[i]
            arr["valid"][i, :k] = True
        return cls(total=total, **arr)

    @property
    def num_models(self) -> int:
        return self.logprobs.shape[2]

    def totals(
        self, model_weights: Sequence[float], length_bonus: float, first_pass_weight: float = 1.0
    ) -> np.ndarray:
        """(U, N) combined scores (the formula over arrays); -inf where padded."""
        lm = self.logprobs @ np.asarray(model_weights, dtype=float)  # (U, N): Σ_m w_m × logprob_m
        formula = Formula(first_pass_weight=first_pass_weight, length_bonus=length_bonus)
        return np.where(self.valid, formula.total(lm, self.scores, self.lengths), -np.inf)

    def choice(
        self, model_weights: Sequence[float], length_bonus: float, first_pass_weight: float = 1.0
    ) -> np.ndarray:
        """Each utterance's chosen candidate index under these weights."""
        return self.totals(model_weights, length_bonus, first_pass_weight).argmax(axis=1)  # ties: the first

    def error_count(
        self, model_weights: Sequence[float], length_bonus: float, first_pass_weight: float = 1.0
    ) -> int:
        pick = self.choice(model_weights, length_bonus, first_pass_weight)
        return int(self.errors[np.arange(len(pick)), pick].sum())

    def oracle_count(self) -> int:
        return (
            int(np.where(self.valid, self.errors, np.iinfo(np.int64).max).min(axis=1).sum())
            if len(self.errors)
            else 0
        )


@dataclass
class TuneResult:
    model_weights: list[float]
    length_bonus: float
    errors: int  # on dev, at these weights
    first_pass_errors: int  # on dev, first pass alone
    oracle_errors: int
    total: int
    evaluations: int  # weight settings tried

    def rate(self, errors: int) -> float:
        return errors / self.total if self.total else 0.0


def _middle_of_best_run(values: Sequence[float], errors: Sequence[int], current: float) -> float:
    """The middle of the longest run of consecutive values with the fewest errors (the run that
    holds ``current`` wins a tie, then the first): a weight in the middle of a flat stretch of
    the objective is the one least likely to be at the edge of it on other data."""
    low = min(errors)
    runs: list[list[int]] = []
    for i, e in enumerate(errors):
        if e == low:
            if runs and runs[-1][-1] == i - 1:
                runs[-1].append(i)
            else:
                runs.append([i])
    longest = max(len(r) for r in runs)
    candidates = [r for r in runs if len(r) == longest]
    run = next((r for r in candidates if current in (values[i] for i in r)), candidates[0])
    return values[run[len(run) // 2]]


def tune(problem: TuneProblem, tune_length_bonus: bool = True) -> TuneResult:
    m = problem.num_models
    evaluations = 0

    def cost(w: Sequence[float], b: float) -> int:
        nonlocal evaluations
        evaluations += 1
        return problem.error_count(w, b)

    best_w, best_b = [0.0] * m, 0.0
    first_pass = best = cost(best_w, best_b)
    bonuses = sorted(BONUS_GRID, key=lambda b: (abs(b), b)) if tune_length_bonus else [0.0]

    # 1. the coarse grid (jointly over up to three models, else each model alone); the first
    #    point with the fewest errors wins, smaller weights and bonuses tried first
    if m <= 3:
        grids: list[tuple[float, ...]] = list(itertools.product(GRID, repeat=m))
    else:
        grids = [tuple(g if j == i else 0.0 for j in range(m)) for i in range(m) for g in GRID]
    for point in grids:
        for b in bonuses:
            e = cost(point, b)
            if e < best:
                best, best_w, best_b = e, list(point), b

    # 2. coordinate descent with shrinking steps: each coordinate goes to the middle of its best
    #    stretch among current + k × step (k = -8..8); only fewer errors count as an improvement
    step = START_STEP
    for _ in range(MAX_SWEEPS):
        improved = False
        for coord in range(m + (1 if tune_length_bonus else 0)):
            current = best_w[coord] if coord < m else best_b
            values = [current + k * step for k in range(-8, 9)]
            if coord < m:
                values = [v for v in values if v >= 0]  # a negative weight rewards the unlikely
            errors = []
            for v in values:
                w, b = list(best_w), best_b
                if coord < m:
                    w[coord] = v
                else:
                    b = v
                errors.append(cost(w, b))
            if min(errors) <= best:
                improved = improved or min(errors) < best
                best = min(errors)
                chosen = _middle_of_best_run(values, errors, current)
                if coord < m:
                    best_w[coord] = chosen
                else:
                    best_b = chosen
        if not improved:
            if step <= MIN_STEP:
                break
            step /= 2
    return TuneResult(
        model_weights=[round(x, 6) for x in best_w],
        length_bonus=round(best_b, 6),
        errors=best,
        first_pass_errors=first_pass,
        oracle_errors=problem.oracle_count(),
        total=problem.total,
        evaluations=evaluations,
    )


def build_problem(
    utterances: Sequence[Utterance],
    scores: Mapping[str, CandidateScores],
    models: Sequence[str],
    length_unit: str,
    metric: str,
) -> TuneProblem:
    """The arrays of the utterances that have a reference (the others cannot be scored)."""
    with_ref = [u for u in utterances if u.reference is not None]
    if not with_ref:
        raise ValueError("no utterance has a reference: tuning needs a dev set with references")
    errors = candidate_errors(with_ref, metric)
    return TuneProblem.build(
        scores=[[c.score for c in u.candidates] for u in with_ref],
        logprobs=[[[scores[c.text].logprobs[m] for m in models] for c in u.candidates] for u in with_ref],
        lengths=[
            [text_length(c.text, length_unit, scores[c.text].num_tokens) for c in u.candidates]
            for u in with_ref
        ],
        errors=[[e.errors for e in row] for row in errors],
        total=sum(row[0].total for row in errors),
    )


def tune_weights(
    utterances: Sequence[Utterance],
    scores: Mapping[str, CandidateScores],
    models: Sequence[str],
    length_unit: str,
    metric: str,
    tune_length_bonus: bool = True,
) -> tuple[Weights, TuneResult]:
    """The weights minimizing ``metric`` on ``utterances``, with what the search found as metadata."""
    problem = build_problem(utterances, scores, models, length_unit, metric)
    result = tune(problem, tune_length_bonus)
    weights = Weights(
        models=dict(zip(models, result.model_weights, strict=True)),
        first_pass_weight=1.0,
        length_bonus=result.length_bonus,
        length_unit=length_unit,
        metadata={
            "metric": metric,
            "dev_error_before": result.rate(result.first_pass_errors),
            "dev_error_after": result.rate(result.errors),
            "dev_oracle_error": result.rate(result.oracle_errors),
            "dev_utterances": int(problem.scores.shape[0]),
        },
    )
    return weights, result
