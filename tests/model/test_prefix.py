"""Prefix-shared scoring equals plain scoring, and computes each distinct prefix exactly once."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model.models.lm import LanguageModel, RNNLanguageModel
from model.models.loading import load_model
from model.models.prefix import build_tree, plan_depths, score_tree
from model.text.tokenizer import BOS_ID, EOS_ID

from ..conftest import build_tiny_model

TOL = 1e-5


@pytest.fixture(scope="module", params=["lstm", "gru", "rnn_tanh"])
def lm(request: pytest.FixtureRequest) -> RNNLanguageModel:
    net, tok = build_tiny_model(cell=request.param, steps=10)
    return RNNLanguageModel(net, tok)


@pytest.fixture(scope="module")
def lstm(tiny_model_dir) -> RNNLanguageModel:
    lm = load_model(tiny_model_dir)
    assert isinstance(lm, RNNLanguageModel)
    return lm


def ids(lm: LanguageModel, text: str) -> list[int]:
    return [BOS_ID, *lm.tokenizer.encode(text).ids, EOS_ID]


def trie_bound(seqs: Sequence[Sequence[int]]) -> int:
    """Distinct proper prefixes s[:i], 1 <= i < len(s): what must be fed, and no more."""
    return len({tuple(s[:i]) for s in seqs for i in range(1, len(s))})


def assert_same_as_plain(lm: LanguageModel, seqs: list[list[int]], **kw) -> None:
    res = score_tree(lm, seqs, **kw)
    assert len(res.logprobs) == len(seqs)
    for s, got in zip(seqs, res.logprobs, strict=True):
        assert got.dtype == torch.float64 and got.shape == (max(len(s) - 1, 0),)
        if len(s) > 1:
            want = lm.sequence_logprobs([s])[0]
            torch.testing.assert_close(got, want, atol=TOL, rtol=0)


CASES = {
    "homophones": ["厨房里食油用完了", "厨房里石油用完了", "厨房里的油用完了"],
    "word order": ["你先走", "你走先", "先你走"],
    "duplicates": ["你先走吧", "你先走吧", "你先走吧", "今天天气很好"],
    "empty candidate": ["", "我们先走了", ""],
    "one-token candidates": ["你", "我", "你", "好"],
    "prefix of another": ["今天", "今天天气", "今天天气很好"],
    "unknown characters": ["😀厨房", "厨房😀", "ÅÅÅ"],
    "single": ["新华社记者报道"],
}


@pytest.mark.parametrize("case", CASES)
def test_prefix_shared_equals_plain(lm: RNNLanguageModel, case: str) -> None:
    seqs = [ids(lm, t) for t in CASES[case]]
    assert_same_as_plain(lm, seqs)
    res = score_tree(lm, seqs)
    assert res.computed == trie_bound(seqs)
    assert res.requested == sum(len(s) - 1 for s in seqs)


def test_degenerate_sequences(lstm: RNNLanguageModel) -> None:
    seqs = [[], [BOS_ID], [BOS_ID, EOS_ID], [7], [7, 8]]  # no bos, no eos, nothing at all
    res = score_tree(lstm, seqs)
    assert [len(x) for x in res.logprobs] == [0, 0, 1, 0, 1]
    assert_same_as_plain(lstm, seqs)
    assert score_tree(lstm, []).logprobs == []
    assert score_tree(lstm, [[], [BOS_ID]]).computed == 0


def test_six_way_one_swap_computes_the_trie_bound(lstm: RNNLanguageModel) -> None:
    """Six candidates differing by one swapped character at one position p of n."""
    base = lstm.tokenizer.encode("人民日报发表新年讲话").ids
    n, p = len(base), 4
    swaps = [lstm.tokenizer.token_id(c) for c in "天气很好我"]
    seqs = [[BOS_ID, *base, EOS_ID]] + [[BOS_ID, *base[:p], t, *base[p + 1 :], EOS_ID] for t in swaps]
    res = score_tree(lstm, seqs)
    assert res.requested == 6 * (n + 1)
    assert res.computed == (p + 1) + 6 * (n - p)  # the trunk once, then six branches
    assert_same_as_plain(lstm, seqs)


def test_dense_mode_computes_every_position(lstm: RNNLanguageModel) -> None:
    seqs = [ids(lstm, t) for t in CASES["duplicates"]]
    res = score_tree(lstm, seqs, share=False)
    assert res.computed == res.requested
    assert_same_as_plain(lstm, seqs, share=False)


def test_queries_match_prefill_and_next_token(lstm: RNNLanguageModel) -> None:
    seqs = [ids(lstm, t) for t in CASES["homophones"]]
    queries = [
        [BOS_ID],
        ids(lstm, "厨房里")[:-1],
        ids(lstm, "厨房里食油")[:-1],
        ids(lstm, "厨房里")[:-1],
        ids(lstm, "你先走")[:-1],
    ]
    res = score_tree(lstm, seqs, queries, with_state=True)
    want_lp, want_state = lstm.prefill(queries)
    torch.testing.assert_close(res.next_logprobs, want_lp, atol=TOL, rtol=0)
    torch.testing.assert_close(res.states, want_state, atol=TOL, rtol=0)
    torch.testing.assert_close(res.next_logprobs, lstm.next_token_logprobs(queries), atol=TOL, rtol=0)
    # a query ending inside a shared trunk splits it there, and the scores stay the same
    assert_same_as_plain(lstm, seqs)
    with pytest.raises(ValueError, match="at least its start token"):
        score_tree(lstm, [], [[]])


def test_logits_never_exceed_the_chunk_bound(lstm: RNNLanguageModel, monkeypatch: pytest.MonkeyPatch) -> None:
    seqs = [ids(lstm, t) for t in CASES["homophones"] + CASES["prefix of another"]]
    vocab = lstm.vocab_size
    bound = 3 * vocab
    shapes = []
    decoder = lstm.net.decoder
    original = decoder.forward

    def recording(x: torch.Tensor) -> torch.Tensor:
        out = original(x)
        shapes.append(out.shape)
        return out

    monkeypatch.setattr(decoder, "forward", recording)
    res = score_tree(lstm, seqs, max_logits=bound)
    assert shapes and all(s[0] * s[1] <= bound for s in shapes)
    assert sum(s[0] for s in shapes) == res.computed  # every computed row goes through once
    monkeypatch.undo()
    assert_same_as_plain(lstm, seqs, max_logits=bound)


def test_nodes_run_depth_by_depth(lstm: RNNLanguageModel) -> None:
    seqs = [ids(lstm, t) for t in CASES["homophones"]]
    plan = plan_depths(build_tree(seqs))
    # the trunk <bos>厨房里 one row per depth, then the three branches side by side (no <eos> fed)
    assert [len(level) for level in plan.tokens] == [1, 1, 1, 1, 3, 3, 3, 3, 3]
    assert plan.parent_rows[4] == [0, 0, 0] and plan.parent_rows[5] == [0, 1, 2]
    assert plan.num_rows == 19


def test_explicit_cell_step_equals_the_fused_kernel(lm: RNNLanguageModel) -> None:
    prefixes = [ids(lm, t)[:-1] for t in ["厨房里", "你先", "今天天气", "新华社"]]
    _, state = lm.prefill(prefixes)
    tokens = torch.tensor([5, 6, 7, 8])
    with torch.inference_mode():
        logits, want_state, _ = lm.net(tokens.view(-1, 1), state)  # nn.LSTM/GRU/RNN, one step
    want_lp = torch.log_softmax(logits[:, 0].float(), dim=-1)
    got_lp, got_state = lm.step(state, tokens)  # the network's explicit cells
    torch.testing.assert_close(got_lp, want_lp, atol=TOL, rtol=0)
    torch.testing.assert_close(got_state, want_state, atol=TOL, rtol=0)


class Wrapped(LanguageModel):
    """Not an RNNLanguageModel: scoring takes the fallback path (no sharing)."""

    kind = "wrapped"

    def __init__(self, inner: RNNLanguageModel) -> None:
        self.inner, self.tokenizer = inner, inner.tokenizer

    def sequence_logprobs(self, seqs):
        return self.inner.sequence_logprobs(seqs)

    def start_state(self, batch_size):
        return self.inner.start_state(batch_size)

    def step(self, state, ids):
        return self.inner.step(state, ids)

    def select_state(self, state, rows):
        return self.inner.select_state(state, rows)

    def concat_states(self, states):
        return self.inner.concat_states(states)


def test_other_models_fall_back_to_their_own_scoring(lstm: RNNLanguageModel) -> None:
    model = Wrapped(lstm)
    seqs = [ids(lstm, t) for t in CASES["empty candidate"]] + [[BOS_ID]]
    res = score_tree(model, seqs, [[BOS_ID, 5]], with_state=True)
    assert res.computed == res.requested and res.tree is None
    assert res.logprobs[-1].numel() == 0
    assert_same_as_plain(model, seqs)
    torch.testing.assert_close(res.next_logprobs, lstm.next_token_logprobs([[BOS_ID, 5]]), atol=TOL, rtol=0)


def test_random_nbest_lists(lstm: RNNLanguageModel) -> None:
    rng = random.Random(7)
    vocab = lstm.vocab_size
    for _ in range(20):
        base = [BOS_ID] + [rng.randrange(4, vocab) for _ in range(rng.randrange(0, 15))]
        seqs = []
        for _ in range(rng.randrange(1, 12)):
            cut = rng.randrange(0, len(base) + 1)
            seqs.append(base[:cut] + [rng.randrange(3, vocab) for _ in range(rng.randrange(0, 4))])
        res = score_tree(lstm, seqs)
        assert res.computed == trie_bound(seqs)
        assert_same_as_plain(lstm, seqs)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(st.integers(4, 9), max_size=6), max_size=8))
def test_property_prefix_tree_equals_plain(lstm: RNNLanguageModel, bodies: list[list[int]]) -> None:
    """Over a 6-token alphabet, so candidates collide, nest and share prefixes often."""
    seqs = [[BOS_ID, *b, EOS_ID] for b in bodies]
    res = score_tree(lstm, seqs)
    assert res.computed == trie_bound(seqs) <= res.requested
    for got, want in zip(res.logprobs, lstm.sequence_logprobs(seqs), strict=True):
        torch.testing.assert_close(got, want, atol=TOL, rtol=0)
    queries = [s[:-1] for s in seqs]
    if queries:
        res = score_tree(lstm, seqs, queries, with_state=True)
        want_lp, want_state = lstm.prefill(queries)
        torch.testing.assert_close(res.next_logprobs, want_lp, atol=TOL, rtol=0)
        torch.testing.assert_close(res.states, want_state, atol=TOL, rtol=0)
