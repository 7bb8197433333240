"""Every position's alternatives from one pass (model/models/positions.py): the same numbers as a
next-token question per prefix and as ``sequence_logprobs``, for the recurrent models (the RNN
and the hybrid: a prefix tree) and for any other model (stepped), at a cost linear in the length."""

from __future__ import annotations

import pytest
import torch

from model.models.hybrid import HybridLanguageModel
from model.models.lm import LanguageModel, RNNLanguageModel
from model.models.ngram.model import build_ngram
from model.models.positions import alternatives_each, top_alternatives
from model.models.prefix import PassStopped
from model.text.batching import with_boundaries
from model.text.tokenizer import BOS_ID

from ..conftest import TINY_LINES, build_tiny_model
from .test_hybrid import hybrid_net

SENTENCES = ["厨房里食油用完了", "厨房里的油用完了", "你先走吧", "今", ""]


@pytest.fixture(scope="module")
def rnn() -> RNNLanguageModel:
    net, tok = build_tiny_model()
    return RNNLanguageModel(net, tok)


@pytest.fixture(scope="module")
def kn3(rnn):
    return build_ngram(rnn.tokenizer, TINY_LINES, order=3)


@pytest.fixture(scope="module")
def hybrid(rnn, kn3):
    return HybridLanguageModel(hybrid_net(rnn.tokenizer), kn3, rnn.tokenizer)


def sequences(lm: LanguageModel) -> list[list[int]]:
    return [with_boundaries(lm.tokenizer.encode(s).ids)[:-1] for s in SENTENCES] + [[5, 6, 7]]


@pytest.mark.parametrize("which", ["rnn", "hybrid", "kn3"])
def test_every_position_equals_a_next_token_question_per_prefix(which, request):
    lm: LanguageModel = request.getfixturevalue(which)
    seqs = sequences(lm)
    k = 4
    res = lm.position_alternatives(seqs, k)
    wanted = lm.sequence_logprobs(seqs)
    for seq, got, want in zip(seqs, res.sequences, wanted, strict=True):
        assert len(got.token_logprobs) == len(got.alternatives) == max(len(seq) - 1, 0)
        assert got.token_logprobs == pytest.approx(want.tolist(), abs=1e-5)
        for t in range(1, len(seq)):
            dist = lm.next_token_logprobs([seq[:t]])[0]
            ids = [i for i, _ in got.alternatives[t - 1]]
            top = dist.topk(k)
            assert ids == top.indices.tolist() or sorted(ids) == sorted(top.indices.tolist())
            assert [lp for _, lp in got.alternatives[t - 1]] == pytest.approx(top.values.tolist(), abs=1e-5)


@pytest.mark.parametrize("which", ["rnn", "hybrid"])
def test_the_stepped_default_equals_the_tree(which, request):
    lm: LanguageModel = request.getfixturevalue(which)
    seqs = sequences(lm)
    tree = lm.position_alternatives(seqs, 3)
    stepped = alternatives_each(lm, seqs, 3)
    for a, b in zip(tree.sequences, stepped.sequences, strict=True):
        assert a.token_logprobs == pytest.approx(b.token_logprobs, abs=1e-5)
        assert [[i for i, _ in alts] for alts in a.alternatives] == [
            [i for i, _ in alts] for alts in b.alternatives
        ]


def test_the_cost_is_linear_and_shared_prefixes_are_computed_once(rnn):
    long = [BOS_ID, *[5, 6, 7, 8] * 250]  # 1,001 tokens
    res = rnn.position_alternatives([long], 2)
    assert res.computed == 1000 and len(res.sequences[0].alternatives) == 1000
    shared = rnn.position_alternatives([long, [*long[:-1], 9]], 2)
    assert shared.computed == 1000  # the second differs only in its last token: nothing more to feed
    assert rnn.position_alternatives([[BOS_ID], []], 2).computed == 0


def test_top_zero_gives_log_probs_only_and_impossible_tokens_are_left_out(rnn):
    seq = sequences(rnn)[0]
    res = rnn.position_alternatives([seq], 0)
    assert all(alts == [] for alts in res.sequences[0].alternatives)
    everything = top_alternatives(
        torch.log_softmax(torch.randn(2, 6), -1).index_fill(1, torch.tensor([0]), float("-inf")), 10
    )
    assert [len(row) for row in everything] == [5, 5]


@pytest.mark.parametrize("which", ["rnn", "hybrid", "kn3"])
def test_a_pass_stops_between_chunks_when_asked(which, request):
    lm: LanguageModel = request.getfixturevalue(which)
    asked = []

    def stop() -> bool:
        asked.append(1)
        return True

    with pytest.raises(PassStopped):
        lm.position_alternatives([[BOS_ID, *[5, 6] * 100]], 2, should_stop=stop, chunk_positions=16)
    assert asked == [1]
