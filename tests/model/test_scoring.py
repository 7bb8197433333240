"""model/inference/scoring.py: candidate scores equal the model's own log-probs; options, ranking, next token."""

from __future__ import annotations

import math

import pytest
import torch

from model.inference.scoring import ScoreOptions, next_token_distribution, score_candidates
from model.models.loading import load_model
from model.text.tokenizer import BOS_ID, EOS_ID, UNK_ID

HOMOPHONES = ["厨房里食油用完了", "厨房里石油用完了", "你先走", "你走先"]


@pytest.fixture(scope="module")
def lm(tiny_model_dir):
    return load_model(tiny_model_dir)


def direct_all(lm, texts: list[str], context: str = "", eos: bool = True) -> list[list[float]]:
    """Log-probs of every target of <bos> context text (<eos>), straight from the model, one batch."""
    ctx = lm.tokenizer.encode(context).ids
    seqs = [[BOS_ID, *ctx, *lm.tokenizer.encode(t).ids, *([EOS_ID] if eos else [])] for t in texts]
    return [s.tolist() for s in lm.sequence_logprobs(seqs)]


def direct(lm, text: str, context: str = "", eos: bool = True) -> list[float]:
    return direct_all(lm, [text], context, eos)[0]


def test_scores_are_the_models_log_probs(lm):
    ranking = score_candidates(lm, HOMOPHONES)
    for text, result, expected in zip(HOMOPHONES, ranking.results, direct_all(lm, HOMOPHONES), strict=True):
        assert result.text == text
        assert result.num_tokens == len(text) + 1  # every character and <eos>
        assert result.logprob == pytest.approx(sum(expected), abs=1e-9)
        assert result.token_logprobs == pytest.approx(expected, abs=1e-9)
        assert result.tokens == [*text, "<eos>"]
        assert result.perplexity == pytest.approx(math.exp(-sum(expected) / len(expected)))


def test_context_conditions_but_is_not_scored(lm):
    context, cand = "厨房里", "食油用完了"
    result = score_candidates(lm, [cand], ScoreOptions(context=context)).results[0]
    expected = direct(lm, cand, context)[len(context) :]
    assert result.num_tokens == len(cand) + 1
    assert result.logprob == pytest.approx(sum(expected), abs=1e-9)
    alone = score_candidates(lm, [cand]).results[0]
    assert result.logprob != pytest.approx(alone.logprob)  # the context changed the prediction


# (bos, eos, context, candidate) -> the targets scored, as slices of the full direct log-probs
@pytest.mark.parametrize(
    ("bos", "eos", "context", "text", "first", "count"),
    [
        (True, True, "", "你先走", 0, 4),
        (True, False, "", "你先走", 0, 3),
        (False, True, "", "你先走", 1, 3),  # the first token only conditions
        (False, False, "", "你先走", 1, 2),
        (False, True, "我们", "先走", 2, 3),  # with a context, bos=False changes nothing
        (True, True, "我们", "先走", 2, 3),
        (True, True, "", "", 0, 1),  # empty text: P(<eos> | <bos>)
        (True, False, "", "", 0, 0),  # nothing scored at all
        (False, True, "", "", 1, 0),  # the <eos> is the first token: conditioning only
    ],
)
def test_bos_eos_context_table(lm, bos, eos, context, text, first, count):
    result = score_candidates(lm, [text], ScoreOptions(context=context, bos=bos, eos=eos)).results[0]
    expected = direct(lm, text, context, eos)[first:]
    assert result.num_tokens == count == len(expected)
    assert result.logprob == pytest.approx(sum(expected), abs=1e-9)
    assert len(result.token_logprobs) == count
    if count == 0:
        assert result.perplexity is None and result.logprob == 0.0


ODD_TEXTS = ["", "   ", "\t\n", "😀🚀", "héllo wörld", "厨房 kitchen 🍳", "<unk>", "ß" * 40]


@pytest.mark.parametrize("text", ODD_TEXTS)
def test_any_text_gets_a_finite_score(lm, text):
    result = score_candidates(lm, [text]).results[0]
    assert math.isfinite(result.logprob) and result.logprob < 0
    assert result.num_tokens == len(text) + 1
    assert result.oov == sum(1 for ch in text if lm.tokenizer.token_id(ch) == UNK_ID)


# lm_weight, length_bonus, normalize, external -> score computed by hand
@pytest.mark.parametrize(
    ("lm_weight", "length_bonus", "normalize", "external"),
    [
        (1.0, 0.0, "none", None),
        (0.5, 0.0, "none", [3.0, -1.0, 0.0, 2.5]),
        (2.0, 0.7, "none", [0.0, 0.0, 1.0, 0.0]),
        (1.0, 0.0, "token", None),
        (0.3, -0.2, "token", [1.0, 2.0, 3.0, 4.0]),
        (0.0, 0.0, "none", [4.0, 3.0, 2.0, 1.0]),  # external scores only
    ],
)
def test_combined_score_table(lm, lm_weight, length_bonus, normalize, external):
    options = ScoreOptions(lm_weight=lm_weight, length_bonus=length_bonus, normalize=normalize)
    ranking = score_candidates(lm, HOMOPHONES, options, external)
    for i, (text, r, lps) in enumerate(
        zip(HOMOPHONES, ranking.results, direct_all(lm, HOMOPHONES), strict=True)
    ):
        lp = sum(lps)
        n = len(text) + 1
        lm_term = lp / n if normalize == "token" else lp
        expected = lm_weight * lm_term + (external[i] if external else 0.0) + length_bonus * n
        assert r.score == pytest.approx(expected, abs=1e-9)
    scores = [r.score for r in ranking.results]
    assert ranking.ranking == sorted(range(len(scores)), key=lambda i: -scores[i])
    assert [ranking.results[i].rank for i in ranking.ranking] == [1, 2, 3, 4]


def test_external_scores_can_reverse_the_ranking(lm):
    plain = score_candidates(lm, HOMOPHONES[:2])
    worst = plain.ranking[-1]
    boosted = score_candidates(
        lm, HOMOPHONES[:2], external_scores=[100.0 if i == worst else 0.0 for i in range(2)]
    )
    assert boosted.ranking[0] == worst


def test_ties_keep_input_order_and_nothing_is_dropped(lm):
    cands = ["你先走", "天气", "你先走", "你先走", ""]
    ranking = score_candidates(lm, cands, ScoreOptions(lm_weight=0.0))  # every score is 0: all tied
    assert ranking.ranking == [0, 1, 2, 3, 4]
    assert [r.rank for r in ranking.results] == [1, 2, 3, 4, 5]
    ranking = score_candidates(lm, cands)  # duplicates tie with each other
    dup_places = [ranking.ranking.index(i) for i in (0, 2, 3)]
    assert dup_places == sorted(dup_places) and dup_places[2] - dup_places[0] == 2
    assert sorted(ranking.ranking) == list(range(len(cands)))


def test_invalid_options_are_refused(lm):
    with pytest.raises(ValueError, match="external_scores"):
        score_candidates(lm, ["a", "b"], external_scores=[1.0])
    with pytest.raises(ValueError, match="normalize"):
        ScoreOptions(normalize="mean")


def test_positions_count_every_computed_target(lm):
    ranking = score_candidates(lm, ["你先走", "天气"], ScoreOptions(context="我们"))
    assert ranking.positions == (2 + 3 + 1) + (2 + 2 + 1)
    assert ranking.tokens_scored == 4 + 3


# -- next token -------------------------------------------------------------------------------------
def test_next_token_is_the_models_distribution(lm):
    [result] = next_token_distribution(lm, ["厨房"], top_k=5)
    ids = [BOS_ID, *lm.tokenizer.encode("厨房").ids]
    full = lm.next_token_logprobs([ids])[0].double()
    top = torch.topk(full, 5)
    assert [t.id for t in result.next] == top.indices.tolist()
    assert [t.logprob for t in result.next] == pytest.approx(top.values.tolist(), abs=1e-9)
    assert [t.prob for t in result.next] == pytest.approx(top.values.exp().tolist(), abs=1e-9)
    assert result.entropy == pytest.approx(float(-(full.exp() * full).nansum()), abs=1e-6)  # 0·log 0 = 0
    assert 0 < result.entropy <= math.log(lm.vocab_size) + 1e-9
    assert result.tokens == ["厨", "房"]
    assert [t.token for t in result.next] == [lm.tokenizer.piece(i) for i in top.indices.tolist()]


def test_next_token_batch_equals_single_and_top_k_is_clamped(lm):
    texts = ["", "你", "厨房里食油", "😀 mixed 文字"]
    batch = next_token_distribution(lm, texts, top_k=10_000)
    for text, b in zip(texts, batch, strict=True):
        [single] = next_token_distribution(lm, [text], top_k=10_000)
        # clamped to the vocabulary, less <pad> and <bos>, which are never a next token
        assert len(b.next) == lm.vocab_size - 2
        assert [t.id for t in b.next] == [t.id for t in single.next]
        assert [t.logprob for t in b.next] == pytest.approx([t.logprob for t in single.next], abs=1e-5)
        assert sum(t.prob for t in b.next) == pytest.approx(1.0, abs=1e-6)
        assert [t.special for t in b.next] == [t.id < 4 for t in b.next]
    assert batch[3].oov == lm.tokenizer.encode(texts[3]).oov > 0


def test_next_token_refuses_top_k_zero(lm):
    with pytest.raises(ValueError, match="top_k"):
        next_token_distribution(lm, ["a"], top_k=0)


def test_oov_logprob_is_the_part_scored_at_unknown_pieces() -> None:
    from model.inference.scoring import ScoreOptions, score_candidates
    from model.models.lm import RNNLanguageModel
    from tests.conftest import build_tiny_model

    net, tok = build_tiny_model()
    lm = RNNLanguageModel(net, tok)
    known, unknown = "今天天气很好", "今天☃天气很好"  # ☃ is not in the tiny vocabulary
    ranking = score_candidates(lm, [known, unknown], ScoreOptions())
    a, b = ranking.results
    assert (a.oov, a.oov_logprob) == (0, 0.0)
    assert b.oov == 1
    unk_position = b.tokens.index("☃")
    assert b.oov_logprob == pytest.approx(b.token_logprobs[unk_position])
    assert b.oov_logprob < 0
