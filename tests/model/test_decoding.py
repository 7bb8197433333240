"""Beam search over confusion networks (model/decoding): exact scores, brute force, recombination."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from model.decoding import (
    DecodeOptions,
    DecodeStats,
    cn_graph,
    context_width,
    decode_cn,
    parse_confusion_network,
)
from model.decoding.graph import Arc, WordGraph
from model.inference.scoring import ScoreOptions, score_candidates
from model.models.lm import RNNLanguageModel
from model.models.ngram.model import build_ngram
from model.text.tokenizer import Tokenizer

from ..conftest import TINY_LINES, build_tiny_model

CN = [
    [["厨", -0.7], ["出", -0.2]],
    [["房", -0.3], ["方", -0.4], ["放", -2.0]],
    [["里", -0.1], ["", -1.5]],
    [["食油", -0.9], ["石油", -0.5], ["是", -1.2]],
    [["用完了", -0.2], ["用", -1.0], ["", -2.5]],
]


@pytest.fixture(scope="module")
def rnn() -> RNNLanguageModel:
    net, tok = build_tiny_model(steps=40)
    return RNNLanguageModel(net, tok)


@pytest.fixture(scope="module")
def kn3():
    return build_ngram(Tokenizer.build(TINY_LINES, kind="char"), TINY_LINES, order=3)


def brute_force(lm, cn, lm_weight=1.0, length_bonus=0.0):
    """Every path's exact total (score_candidates), best first; one entry per distinct text."""
    best: dict[str, float] = {}
    for choice in itertools.product(*cn):
        text = "".join(w for w, _ in choice)
        acoustic = math.fsum(s for _, s in choice)
        best[text] = max(acoustic, best.get(text, -math.inf))
    texts = list(best)
    opts = ScoreOptions(lm_weight=lm_weight, length_bonus=length_bonus, length_unit="tokens")
    ranking = score_candidates(lm, texts, opts, external_scores=[best[t] for t in texts])
    return [(ranking.results[i].text, ranking.results[i].score) for i in ranking.ranking]


@pytest.mark.parametrize("lm_weight, length_bonus", [(1.0, 0.0), (2.5, 0.0), (0.7, 1.5)])
def test_a_wide_beam_finds_the_brute_force_n_best(rnn, lm_weight, length_bonus):
    expected = brute_force(rnn, CN, lm_weight, length_bonus)[:5]
    paths = decode_cn(
        rnn, CN, DecodeOptions(beam=64, nbest=5, lm_weight=lm_weight, length_bonus=length_bonus)
    )
    assert [p.text for p in paths] == [t for t, _ in expected]
    assert [p.score for p in paths] == pytest.approx([s for _, s in expected], abs=1e-5)


def test_a_paths_lm_score_is_what_score_gives_its_text(rnn):
    paths = decode_cn(rnn, CN, DecodeOptions(beam=8, nbest=4, lm_weight=1.3, length_bonus=0.2))
    for p in paths:
        r = score_candidates(rnn, [p.text]).results[0]  # /score's defaults: <bos> … <eos>, alone
        assert p.lm_logprob == r.logprob  # the same function on the same batch, so the same float
        assert p.num_tokens == len(rnn.tokenizer.encode(p.text).ids)
        assert p.search_lm_logprob == pytest.approx(r.logprob, abs=1e-3)  # the search's float32 steps
        assert p.score == pytest.approx(p.acoustic + 1.3 * p.lm_logprob + 0.2 * p.num_tokens, abs=1e-9)
    assert [p.score for p in paths] == sorted((p.score for p in paths), reverse=True)


def test_one_batched_step_per_slot_and_per_extra_token(rnn):
    cn = [[["厨", -0.1], ["出", -0.2]], [["房", -0.1], ["方", -0.1]], [["里", 0.0]]]
    stats = DecodeStats()
    decode_cn(rnn, cn, DecodeOptions(beam=4), stats)
    assert stats.steps == 1 + len(cn)  # <bos>, then one step per slot for every live hypothesis
    stats = DecodeStats()
    decode_cn(rnn, [[["厨房里", 0.0], ["出", 0.0]]], DecodeOptions(beam=4), stats)
    assert stats.steps == 1 + 2 + 1  # <bos>, 厨 and 房 inside the word, then the slot's last tokens


def test_deletions_meeting_at_one_text_merge_into_one_hypothesis(rnn):
    cn = [[["好", -0.5], ["", -0.1]], [["好", -0.2], ["", -0.3]]]
    stats = DecodeStats()
    paths = decode_cn(rnn, cn, DecodeOptions(beam=8, nbest=3), stats)
    assert sorted(p.text for p in paths) == ["", "好", "好好"]  # "好" once, with its best path
    assert stats.merged >= 1
    only = next(p for p in paths if p.text == "好")
    assert only.acoustic == pytest.approx(max(-0.5 - 0.3, -0.1 - 0.2))
    unmerged = decode_cn(rnn, cn, DecodeOptions(beam=8, nbest=4, recombine=False))
    assert [p.text for p in unmerged].count("好") == 2


def test_an_ngram_merges_by_its_context_and_keeps_the_best_path(kn3):
    assert context_width(kn3) == 2
    stats = DecodeStats()
    paths = decode_cn(kn3, CN, DecodeOptions(beam=64, nbest=1), stats)
    assert stats.merged > 0
    assert paths[0].text == brute_force(kn3, CN)[0][0]


def test_an_rnn_looks_at_its_whole_history(rnn):
    assert context_width(rnn) is None


def test_the_beam_and_per_slot_pruning_bound_the_work(rnn):
    wide, narrow = DecodeStats(), DecodeStats()
    decode_cn(rnn, CN, DecodeOptions(beam=64), wide)
    decode_cn(rnn, CN, DecodeOptions(beam=2, max_arcs=1), narrow)
    assert narrow.stepped_rows < wide.stepped_rows
    assert narrow.expansions <= 2 * len(CN)
    only_best = decode_cn(rnn, CN, DecodeOptions(beam=4, max_arcs=1))
    assert only_best[0].text == "出房里石油用完了"  # each slot's best-scored alternative


def test_a_threshold_drops_hypotheses_far_below_the_best(rnn):
    stats = DecodeStats()
    decode_cn(rnn, CN, DecodeOptions(beam=64, beam_threshold=0.5), stats)
    full = DecodeStats()
    decode_cn(rnn, CN, DecodeOptions(beam=64), full)
    assert stats.stepped_rows < full.stepped_rows


def test_a_word_model_joins_words_with_spaces():
    lines = ["the cat sat", "the dog sat", "a cat ran"] * 5
    lm = build_ngram(Tokenizer.build(lines, kind="word"), lines, order=2)
    paths = decode_cn(lm, [[["the", 0.0], ["a", 0.0]], [["cat", -0.1], ["cap", 0.0]], [["sat", 0.0]]])
    assert paths[0].text == "the cat sat"
    assert paths[0].lm_logprob == pytest.approx(
        score_candidates(lm, ["the cat sat"]).results[0].logprob, abs=1e-12
    )


@pytest.mark.parametrize(
    "slots, message",
    [
        ([], "non-empty list"),
        ([[]], r"slots\[0\] must be a non-empty"),
        ([[["a", -1.0]], [["b"]]], r"slots\[1\]\[0\] must be a \[word, score\] pair"),
        ([[["a", float("nan")]]], r"slots\[0\]\[0\]: the score must be a finite number"),
        ([[[3, -1.0]]], r"slots\[0\]\[0\]: the word must be a string"),
        ([[["a", True]]], "finite number"),
    ],
)
def test_malformed_slots_are_refused_by_name(slots, message):
    with pytest.raises(ValueError, match=message):
        parse_confusion_network(slots)


def test_options_check_themselves():
    for bad in (
        {"beam": 0},
        {"nbest": 5, "beam": 4},
        {"max_arcs": -1},
        {"lm_weight": math.inf},
        {"beam_threshold": 0},
    ):
        with pytest.raises(ValueError):
            DecodeOptions(**bad)


def test_graphs_refuse_cycles_and_unreachable_ends():
    with pytest.raises(ValueError, match="cycle"):
        WordGraph(3, 0, 2, [Arc(0, 1, "a", 0.0), Arc(1, 0, "b", 0.0), Arc(1, 2, "c", 0.0)]).levels()
    with pytest.raises(ValueError, match="no path"):
        WordGraph(3, 0, 2, [Arc(0, 1, "a", 0.0)]).levels()
    assert cn_graph(parse_confusion_network(CN)).levels() == [[i] for i in range(len(CN) + 1)]


def test_a_backward_model_is_refused(rnn):
    backward = Tokenizer(kind="char", tokens=rnn.tokenizer.tokens, direction="backward")
    lm = RNNLanguageModel(rnn.net, backward)
    with pytest.raises(ValueError, match="forward"):
        decode_cn(lm, CN)


def test_decoding_leaves_no_autograd_state(rnn):
    paths = decode_cn(rnn, CN, DecodeOptions(beam=4))
    assert isinstance(paths[0].score, float)
    assert not torch.is_inference_mode_enabled()


def test_a_window_model_looks_back_its_context() -> None:
    from model.models.window import WindowConfig, WindowLanguageModel, WindowNet
    from model.text.tokenizer import Tokenizer

    tok = Tokenizer.build(["abc"], kind="char")
    net = WindowNet(WindowConfig(vocab_size=tok.vocab_size, context=3, emb_dim=4, hidden_dim=4))
    assert context_width(WindowLanguageModel(net, tok)) == 3
