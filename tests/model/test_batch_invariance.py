"""Batch-invariant scoring: a sequence's log-probs are bit-identical whatever shares its batch.

The models here are seeded and untrained but wide enough (hidden 96, vocabulary ~60) that a
float32 product's blocking, which changes with the row count, shows in the last bits: without
``batch_invariant`` the same rows alone and among others differ (within the documented bound).
"""

from __future__ import annotations

import asyncio
import random

import pytest
import torch

from model.inference.engine import Engine, EngineConfig
from model.models.config import ModelConfig
from model.models.lm import RNNLanguageModel
from model.models.network import BATCH_INVARIANT_TILE, RNNLM
from model.models.precision import bf16_supported
from model.text.tokenizer import BOS_ID, EOS_ID, Tokenizer
from tests.conftest import TINY_LINES

# With batch_invariant off, a token's log-prob alone and among others: at most this far apart
# (float32 products over a different row count; measured up to ~2.4e-6 on the shipped model).
UNTILED_BOUND = 1e-5


def wide_model(cell: str = "lstm", seed: int = 0) -> RNNLanguageModel:
    torch.manual_seed(seed)
    tok = Tokenizer.build(TINY_LINES, kind="char")
    config = ModelConfig(
        vocab_size=tok.vocab_size, cell=cell, emb_dim=64, hidden_dim=96, num_layers=2, dropout=0.0
    )
    return RNNLanguageModel(RNNLM(config), tok)


def ids(lm: RNNLanguageModel, text: str, eos: bool = True) -> list[int]:
    return [BOS_ID, *lm.tokenizer.encode(text).ids, *([EOS_ID] if eos else [])]


MINE = ["厨房里食油用完了", "厨房里石油用完了", "你先走吧"]


def neighbours(lm: RNNLanguageModel, count: int, seed: int) -> list[list[int]]:
    """``count`` sentences of 1-40 characters, some sharing a prefix with MINE."""
    rng = random.Random(seed)
    chars = "".join(TINY_LINES)
    out = []
    for i in range(count):
        text = "".join(rng.choice(chars) for _ in range(rng.randint(1, 40)))
        out.append(ids(lm, (MINE[i % 3][: rng.randint(1, 4)] if i % 2 else "") + text))
    return out


# (neighbours before, neighbours after): batch sizes across tile boundaries, lengths 1-40
LAYOUTS = [(0, 1), (1, 0), (3, 4), (BATCH_INVARIANT_TILE - 2, 0), (0, BATCH_INVARIANT_TILE + 5), (37, 29)]


def score_among(lm: RNNLanguageModel, before: int, after: int, seed: int = 0):
    mine = [ids(lm, t) for t in MINE]
    queries = [ids(lm, t, eos=False) for t in MINE]
    pre, post = neighbours(lm, before, seed), neighbours(lm, after, seed + 1)
    q_pre, q_post = [s[:-1] for s in pre], [s[:-1] for s in post]
    res = lm.score_tree(pre + mine + post, q_pre + queries + q_post, with_state=True)
    rows = slice(before, before + len(mine))
    assert res.next_logprobs is not None and res.states is not None
    return res.logprobs[rows], res.next_logprobs[rows], res.states[:, rows]


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
def test_scores_next_tokens_and_states_alone_equal_among_neighbours(cell: str) -> None:
    lm = wide_model(cell)
    lm.set_numerics(batch_invariant=True)
    alone_lp, alone_next, alone_states = score_among(lm, 0, 0)
    for before, after in LAYOUTS:
        lp, nxt, states = score_among(lm, before, after, seed=before + after)
        assert all(torch.equal(a, b) for a, b in zip(alone_lp, lp, strict=True)), (before, after)
        assert torch.equal(alone_next, nxt), (before, after)
        assert torch.equal(alone_states, states), (before, after)


def test_without_the_setting_scores_stay_within_the_documented_bound() -> None:
    lm = wide_model()
    alone, *_ = score_among(lm, 0, 0)
    worst = 0.0
    for before, after in LAYOUTS:
        lp, *_ = score_among(lm, before, after, seed=before + after)
        worst = max(worst, max(float((a - b).abs().max()) for a, b in zip(alone, lp, strict=True)))
    assert worst <= UNTILED_BOUND


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_a_decoding_step_of_one_row_equals_the_same_row_in_a_batch(cell: str) -> None:
    lm = wide_model(cell)
    lm.set_numerics(batch_invariant=True)
    prefixes = neighbours(lm, 40, seed=3)
    lp, state = lm.prefill(prefixes)
    tokens = lp.argmax(-1)
    all_lp, all_state = lm.step(state, tokens)
    for row in (0, 7, 39):
        one_lp, one_state = lm.step(lm.select_state(state, [row]), tokens[row : row + 1])
        assert torch.equal(one_lp[0], all_lp[row])
        assert torch.equal(one_state[:, 0], all_state[:, row])


@pytest.mark.skipif(not bf16_supported("cpu"), reason="this CPU has no native bfloat16 products")
def test_bf16_products_are_batch_invariant_too() -> None:
    lm = wide_model()
    lm.set_numerics("bf16", batch_invariant=True)
    alone, alone_next, _ = score_among(lm, 0, 0)
    for before, after in LAYOUTS[2:]:
        lp, nxt, _ = score_among(lm, before, after, seed=before + after)
        assert all(torch.equal(a, b) for a, b in zip(alone, lp, strict=True))
        assert torch.equal(alone_next, nxt)


def test_one_request_alone_equals_it_among_busy_engine_neighbours() -> None:
    lm = wide_model()
    lm.set_numerics(batch_invariant=True)
    mine = [ids(lm, t) for t in MINE]
    prefix = [ids(lm, MINE[0], eos=False)]

    async def main():
        async with Engine(lm, EngineConfig(max_wait_ms=0)) as engine:
            alone = await engine.score(mine)
            alone_next = await engine.next_token(prefix, top_k=5)
        async with Engine(lm, EngineConfig(max_wait_ms=200)) as engine:
            others = [engine.score(neighbours(lm, n, seed=n)) for n in (1, 9, 30)]
            nexts = [engine.next_token([s[:-1] for s in neighbours(lm, 5, seed=7)], top_k=5)]
            got, got_next, *_ = await asyncio.gather(
                engine.score(mine), engine.next_token(prefix, top_k=5), *others, *nexts
            )
        return alone, alone_next, got, got_next

    alone, alone_next, got, got_next = asyncio.run(asyncio.wait_for(main(), timeout=60))
    assert got.token_logprobs == alone.token_logprobs  # floats, compared exactly
    assert got.logprobs == alone.logprobs
    assert torch.equal(got_next[0].logprobs, alone_next[0].logprobs)


def test_training_ignores_the_tiles_and_still_gets_gradients() -> None:
    lm = wide_model()
    net = lm.net.train()
    net.batch_invariant = True
    batch = torch.tensor([ids(lm, MINE[0])])
    _, _, loss = net(batch[:, :-1], None, batch[:, 1:])
    assert loss is not None
    loss.backward()
    assert net.decoder.weight.grad is not None and float(net.decoder.weight.grad.abs().sum()) > 0
    gates = net.input_gates(0, torch.randn(3, 64, requires_grad=True))  # autograd: the plain product
    gates.sum().backward()
    assert net.rnn.weight_ih_l0.grad is not None
