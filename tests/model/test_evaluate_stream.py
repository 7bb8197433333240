"""Running-text perplexity (state carried across lines) against the per-sentence one."""

from __future__ import annotations

import math

import pytest

from model.models.evaluate import evaluate_lines, evaluate_stream
from model.models.lm import RNNLanguageModel
from tests.conftest import TINY_LINES, build_tiny_model


@pytest.fixture(scope="module")
def lm() -> RNNLanguageModel:
    net, tok = build_tiny_model()
    return RNNLanguageModel(net, tok)


def test_one_stream_per_line_is_the_per_sentence_figure(lm: RNNLanguageModel) -> None:
    lines = TINY_LINES[:7]
    per_sentence = evaluate_lines(lm, lines)
    streams = evaluate_stream(lm, lines, parts=len(lines))
    assert streams["tokens"] == per_sentence["tokens"]  # every character plus one <eos> per line
    assert streams["logprob"] == pytest.approx(per_sentence["logprob"], rel=1e-5)


def test_carried_state_changes_the_score_not_the_count(lm: RNNLanguageModel) -> None:
    lines = TINY_LINES[:7]
    one = evaluate_stream(lm, lines, parts=1)
    per_sentence = evaluate_lines(lm, lines)
    assert one["tokens"] == per_sentence["tokens"]
    assert one["lines"] == len(lines)
    assert not math.isclose(one["logprob"], per_sentence["logprob"], rel_tol=1e-6)
    assert one["mode"].startswith("running text (1 stream,")


def test_uneven_parts_score_every_line(lm: RNNLanguageModel) -> None:
    lines = TINY_LINES[:5]
    three = evaluate_stream(lm, lines, parts=3)  # streams of 2, 2 and 1 lines: padding is not scored
    assert three["tokens"] == sum(len(s) + 1 for s in lines)
    assert math.isfinite(three["perplexity"])
