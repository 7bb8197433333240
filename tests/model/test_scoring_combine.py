"""Rescoring arithmetic of model/inference/scoring.py and model/inference/formula.py: length units, several
models combined with weights, and the sweep of many (lm_weight, length_bonus) pairs over one set of log-probs."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from model.inference.formula import Formula, rank, sweep, weighted_sum
from model.inference.scoring import ScoreOptions, candidate_length, score_candidates, text_length
from model.models.loading import load_model
from model.text.tokenizer import Tokenizer

from ..conftest import TINY_LINES

CHAR = Tokenizer.build(TINY_LINES, kind="char")
WORD = Tokenizer.build(["今天 天气 很好", "a b c"], kind="word")
BACKWARD = Tokenizer.build(TINY_LINES, kind="char", direction="backward")


@pytest.mark.parametrize(
    "tokenizer,text,unit,length",
    [
        (CHAR, "厨房里食油用完了", "tokens", 8),
        (CHAR, "厨房里食油用完了", "chars", 8),
        (CHAR, "厨房里食油用完了", "words", 1),  # unsegmented Chinese: one run of non-space text
        (CHAR, "今天 天气 很好", "tokens", 8),  # a char tokenizer reads the spaces too
        (CHAR, "今天 天气 很好", "chars", 6),
        (CHAR, "今天 天气 很好", "words", 3),
        (CHAR, " \t\n", "chars", 0),
        (CHAR, " \t\n", "words", 0),
        (CHAR, "", "tokens", 0),
        (WORD, "今天 天气 很好", "tokens", 3),
        (WORD, "今天  天气 很好 ", "chars", 6),
        (BACKWARD, "你先走吧", "tokens", 4),
        (CHAR, "😀 mixed 文字", "chars", 8),
    ],
)
def test_text_length_in_each_unit(tokenizer, text, unit, length):
    assert candidate_length(text, tokenizer.encode(text).ids, unit) == length


def test_an_unknown_length_unit_is_refused():
    with pytest.raises(ValueError, match="length_unit"):
        text_length("a", "bytes")
    with pytest.raises(ValueError, match="length_unit"):
        ScoreOptions(length_unit="bytes")


@pytest.fixture(scope="module")
def lm(tiny_model_dir):
    return load_model(tiny_model_dir)


def test_length_bonus_multiplies_the_length_in_its_unit(lm):
    cands = ["今天 天气", "你先走吧", ""]
    plain = score_candidates(lm, cands, ScoreOptions())
    for unit, lengths in [("tokens", [5, 4, 0]), ("chars", [4, 4, 0]), ("words", [2, 1, 0])]:
        got = score_candidates(lm, cands, ScoreOptions(length_bonus=0.5, length_unit=unit))
        assert [r.length for r in got.results] == lengths
        for base, r, n in zip(plain.results, got.results, lengths, strict=True):
            assert r.logprob == base.logprob  # the LM term is not touched by the unit
            assert r.score == pytest.approx(base.logprob + 0.5 * n)


def test_without_a_unit_length_is_the_scored_tokens(lm):
    got = score_candidates(lm, ["你先走", "天气"], ScoreOptions(length_bonus=2.0))
    for r in got.results:
        assert r.length == r.num_tokens == len(r.text) + 1  # <eos> included, as before the unit existed
        assert r.score == pytest.approx(r.logprob + 2.0 * r.num_tokens)


def test_the_formula_is_the_weighted_sum():
    logprobs = {"fwd": [-10.0, -12.5], "bwd": [-11.0, -9.0], "kn": [-20.0, -18.0]}
    weights = {"fwd": 0.8, "bwd": 0.3, "kn": 0.1}
    formula = Formula(first_pass_weight=2.0, length_bonus=0.5)
    each = [{m: lps[i] for m, lps in logprobs.items()} for i in range(2)]
    totals = [formula.total(weighted_sum(each[i], weights), [-3.0, -4.0][i], [4, 6][i]) for i in range(2)]
    for i in range(2):
        want = 2.0 * [-3.0, -4.0][i] + sum(w * logprobs[m][i] for m, w in weights.items()) + 0.5 * [4, 6][i]
        assert totals[i] == pytest.approx(want, abs=1e-12)
    # a model without a weight is left out; no first pass means no first-pass term
    assert [Formula().total(weighted_sum(lps, {"bwd": 1.0})) for lps in each] == [-11.0, -9.0]
    # an LM weight scales the LM term; hotwords add their bonus last
    assert Formula(lm_weight=0.5).total(-10.0, 1.0, 3, 2.0) == -2.0
    with pytest.raises(KeyError):  # a weighted model that did not score
        weighted_sum({"a": 1.0}, {"a": 1.0, "b": 1.0})


def test_the_formula_over_arrays_is_the_formula_on_each_float():
    rng = np.random.default_rng(0)
    lm, first, length = rng.uniform(-50, 0, 7), rng.uniform(-9, 0, 7), rng.integers(0, 9, 7)
    settings = [(0.3, 0.1), (1.7, -1.0)]  # (lm_weight, length_bonus)
    w = np.array(settings)  # (2, 2)
    totals = Formula(w[:, :1], 0.8, w[:, 1:]).total(lm, first, length, 0.5)  # (2, 7): a row per setting
    assert totals.shape == (2, 7)
    for row, (lw, lb) in zip(totals.tolist(), settings, strict=True):
        each = zip(lm.tolist(), first.tolist(), length.tolist(), strict=True)
        assert row == [Formula(lw, 0.8, lb).total(x, f, n, 0.5) for x, f, n in each]  # bit for bit


def test_sweep_equals_ranking_each_pair_on_its_own():
    rng = random.Random(0)
    n = 40
    lm_terms = [rng.uniform(-60, -5) for _ in range(n)]
    external = [rng.uniform(-30, 0) for _ in range(n)]
    lengths = [float(rng.randint(1, 20)) for _ in range(n)]
    pairs = [(rng.uniform(-2, 3), rng.uniform(-3, 3)) for _ in range(200)]
    swept = sweep(lm_terms, external, lengths, pairs)
    assert len(swept) == len(pairs)
    for (lw, lb), got in zip(pairs, swept, strict=True):
        scores = [lw * lm_terms[i] + external[i] + lb * lengths[i] for i in range(n)]
        assert (got.lm_weight, got.length_bonus) == (lw, lb)
        assert got.best == rank(scores)[0]
        assert got.score == scores[got.best]  # same float64 arithmetic, in the same order
    assert len({s.best for s in swept}) > 1  # the pairs do pick different candidates


def test_sweep_ties_pick_the_first_candidate_and_empty_pairs_give_nothing():
    pairs = [(1.0, 0.0), (0.0, 0.0), (0.0, 1.0)]
    swept = sweep([-1.0, -1.0, -2.0], [0.0, 1.0, 1.0], [1.0, 0.0, 0.0], pairs)
    assert [s.best for s in swept] == [1, 1, 0]  # scores -1 0 -1 | 0 1 1 | 1 1 1: ties keep input order
    assert sweep([-1.0], [0.0], [1.0], [(0.0, 0.0), (1.0, 0.0)])[1].score == -1.0
    assert sweep([-1.0], [0.0], [1.0], []) == []
    with pytest.raises(ValueError, match="one LM term"):
        sweep([-1.0], [0.0, 1.0], [1.0], [(1.0, 0.0)])


def test_rank_is_stable_best_first():
    assert rank([1.0, 3.0, 3.0, -math.inf, 2.0]) == [1, 2, 4, 0, 3]
