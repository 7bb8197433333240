"""A text's vector (``LanguageModel.embed``): the poolings against a hand computation with the
network's explicit cells, padding that changes no row, the hybrid's RNN part, kinds without hidden
states refused, and the engine's batched path equal to the model's."""

from __future__ import annotations

import asyncio

import pytest
import torch

from model.inference.embedding import embed_texts, encode_texts
from model.inference.engine import Engine, EngineConfig
from model.inference.engine.text import embed_with_engine
from model.inference.engine.types import TooCostly
from model.models.hybrid import HybridLanguageModel, HybridNet
from model.models.lm import POOLINGS, NoHiddenStates, RNNLanguageModel
from model.models.mixture import MixtureLanguageModel
from model.models.ngram.model import build_ngram
from model.text.tokenizer import BOS_ID, Tokenizer

from ..conftest import TINY_LINES, build_tiny_model

TOL = 1e-5
TEXTS = ["你先走吧", "", "厨房里食油用完了", "今", "新华社记者报道了中国人民银行的消息，今天天气很好"]


@pytest.fixture(scope="module", params=["lstm", "gru"])
def lm(request) -> RNNLanguageModel:
    net, tok = build_tiny_model(cell=request.param)
    return RNNLanguageModel(net, tok)


@pytest.fixture(scope="module")
def kn3():
    return build_ngram(Tokenizer.build(TINY_LINES, kind="char"), TINY_LINES, order=3)


def hand_states(lm: RNNLanguageModel, ids: list[int]) -> torch.Tensor:
    """(n + 1, H) the top layer's ``h`` after <bos> and after each token, one explicit-cell step at
    a time (not the fused kernel ``embed`` runs)."""
    net, hidden = lm.net, lm.net.config.hidden_dim
    state = net.initial_state(1)
    out = []
    with torch.inference_mode():
        for token in [BOS_ID, *ids]:
            _, state = net.step_features(torch.tensor([token]), state)  # (L, 1, S)
            out.append(state[-1, 0, :hidden])  # an LSTM's state is [h ; c]: h first
    return torch.stack(out)


def test_the_poolings_are_the_documented_states(lm):
    for text in TEXTS:
        ids = lm.tokenizer.encode(text).ids
        h = hand_states(lm, ids)
        last = lm.embed([ids], "last")[0]
        mean = lm.embed([ids], "mean")[0]
        assert torch.allclose(last, h[-1], atol=TOL)  # the state after the last token (h_0 if empty)
        want_mean = h[1:].mean(0) if ids else h[0]  # <bos>'s state left out; an empty text gets it
        assert torch.allclose(mean, want_mean, atol=TOL)
    assert lm.embedding_dim == lm.net.config.hidden_dim == lm.embed([[]]).size(1)


@pytest.mark.parametrize("pooling", POOLINGS)
def test_a_text_alone_equals_the_same_text_in_any_batch(lm, pooling):
    seqs = encode_texts(lm.tokenizer, TEXTS)
    together = lm.embed(seqs, pooling)
    assert together.shape == (len(TEXTS), lm.embedding_dim) and together.dtype == torch.float32
    for i, s in enumerate(seqs):
        assert torch.allclose(lm.embed([s], pooling)[0], together[i], atol=TOL)
    # small batches and windows: rows in several padded batches, states carried across windows
    small = RNNLanguageModel(lm.net, lm.tokenizer, window=3, max_batch=2)
    assert torch.allclose(small.embed(seqs, pooling), together, atol=TOL)
    assert torch.allclose(small.embed(seqs[::-1], pooling), together.flip(0), atol=TOL)


def test_normalize_gives_unit_vectors_in_the_same_direction(lm):
    seqs = encode_texts(lm.tokenizer, TEXTS)
    for pooling in POOLINGS:
        raw, unit = lm.embed(seqs, pooling), lm.embed(seqs, pooling, normalize=True)
        assert torch.allclose(unit.norm(dim=1), torch.ones(len(seqs)), atol=TOL)
        assert torch.allclose(unit * raw.norm(dim=1, keepdim=True), raw, atol=TOL)


def test_an_unknown_pooling_is_refused_by_name(lm):
    with pytest.raises(ValueError, match="pooling must be one of last, mean"):
        lm.embed([[5]], "max")


def test_the_hybrid_embeds_with_its_rnn_part(kn3):
    torch.manual_seed(0)
    tok = kn3.tokenizer
    net = HybridNet(build_tiny_model()[0].config).eval()
    hybrid = HybridLanguageModel(net, kn3, tok)
    rnn = RNNLanguageModel(net.rnn, tok)
    seqs = encode_texts(tok, TEXTS)
    for pooling in POOLINGS:
        assert torch.allclose(hybrid.embed(seqs, pooling), rnn.embed(seqs, pooling), atol=TOL)
    assert hybrid.embedding_dim == net.config.hidden_dim


def test_kinds_without_hidden_states_refuse(lm, kn3):
    for model in (kn3, MixtureLanguageModel(lm, kn3, 0.5)):
        with pytest.raises(NoHiddenStates, match=f"a {model.kind} model has no hidden states"):
            model.embedding_dim  # noqa: B018
        with pytest.raises(NoHiddenStates):
            model.embed([[5]])
        with pytest.raises(NoHiddenStates):
            embed_texts(model, ["你"])


def test_embed_texts_counts_the_texts_tokens(lm):
    found = embed_texts(lm, TEXTS, "mean", normalize=True)
    assert found.tokens == [len(lm.tokenizer.encode(t).ids) for t in TEXTS]
    assert found.dim == lm.embedding_dim and found.pooling == "mean" and found.normalized
    assert torch.equal(found.vectors, lm.embed(encode_texts(lm.tokenizer, TEXTS), "mean", True))


# -- through the engine -------------------------------------------------------------------------------
def run(coro):
    return asyncio.run(asyncio.wait_for(coro, timeout=60))


def test_the_engine_embeds_as_the_model_batched_with_other_requests(lm):
    async def main():
        async with Engine(lm, EngineConfig(max_wait_ms=50, threads=1)) as engine:
            jobs = [embed_with_engine(engine, [t], p) for t in TEXTS for p in POOLINGS]
            scored = engine.score([[BOS_ID, 5, 6]])
            *found, _ = await asyncio.gather(*jobs, scored)
            return found, engine.stats.kinds["embed"]

    found, stats = run(main())
    want = {p: lm.embed(encode_texts(lm.tokenizer, TEXTS), p) for p in POOLINGS}
    for k, (text, pooling) in enumerate((t, p) for t in TEXTS for p in POOLINGS):
        assert torch.allclose(found[k].vectors[0], want[pooling][TEXTS.index(text)], atol=TOL)
        assert found[k].pooling == pooling
    assert stats.requests == len(TEXTS) * len(POOLINGS) and stats.batches < stats.requests


def test_the_engine_refuses_at_once_and_by_cost(lm, kn3):
    async def main():
        async with Engine(kn3, EngineConfig(threads=1)) as engine:
            with pytest.raises(NoHiddenStates):
                await engine.embed([[5]])
            assert engine.stats.kinds["embed"].requests == 0  # nothing was queued
        async with Engine(lm, EngineConfig(threads=1, max_request_tokens=6)) as engine:
            assert (await engine.embed([[5, 6, 7, 8, 9]])).shape == (1, lm.embedding_dim)  # 5 + <bos>
            with pytest.raises(TooCostly):
                await engine.embed([[5, 6], [7, 8, 9]])  # 5 tokens + 2 <bos>
            assert (await engine.embed([])).shape == (0, lm.embedding_dim)

    run(main())
