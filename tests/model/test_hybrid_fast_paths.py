"""The hybrid on the RNN's fast paths: the n-gram read from contexts (ids) as tensors, prefix-
shared scoring through the LSTM's explicit cells, the prefix-state cache, batch-invariant and
bf16 products; and a hybrid checkpoint written today loads and scores as an independent
reference computes it.

Tolerance: the explicit cells and the fused kernel do the same arithmetic in another order,
within ``TOL`` = 1e-5 per log-prob (the bound of the RNN's prefix tests); what batch invariance
promises is compared exactly.
"""

from __future__ import annotations

import asyncio
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model.inference.engine import Engine, EngineConfig
from model.inference.generation import GenerationRequest
from model.inference.sampling import SamplingParams
from model.models.config import ModelConfig
from model.models.hybrid import NGRAM_FLOOR, HybridLanguageModel, HybridNet, save_hybrid
from model.models.lm import RecurrentLanguageModel
from model.models.loading import load_model
from model.models.ngram.model import NGramLanguageModel, build_ngram, histories_array
from model.models.ngram.store import save_ngram
from model.models.ngram.torch_tables import TorchBackoffTables, histories_of
from model.models.precision import bf16_supported
from model.models.prefix import build_tree
from model.models.state_cache import PrefixStateCache
from model.text.batching import with_boundaries
from model.text.tokenizer import BOS_ID, EOS_ID, PAD_ID, Tokenizer

from ..conftest import TINY_LINES

TOL = 1e-5
MINE = ["厨房里食油用完了", "厨房里石油用完了", "你先走吧"]


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer.build(TINY_LINES, kind="char")


@pytest.fixture(scope="module")
def kn4(tok: Tokenizer) -> NGramLanguageModel:
    return build_ngram(tok, TINY_LINES, order=4)


def hybrid(tok: Tokenizer, ngram: NGramLanguageModel, hidden: int = 16, seed: int = 0) -> HybridLanguageModel:
    torch.manual_seed(seed)
    config = ModelConfig(
        vocab_size=tok.vocab_size, emb_dim=hidden, hidden_dim=hidden, num_layers=2, dropout=0.0
    )
    net = HybridNet(config)
    with torch.no_grad():  # a trained-looking gate and output: β(h) varies, the RNN has a say
        net.beta.weight.normal_(0, 0.3)
        net.rnn.decoder.bias.normal_(0, 0.5)
    return HybridLanguageModel(net, ngram, tok)


@pytest.fixture(scope="module")
def lm(tok: Tokenizer, kn4: NGramLanguageModel) -> HybridLanguageModel:
    return hybrid(tok, kn4)


def ids(lm: HybridLanguageModel, text: str, eos: bool = True) -> list[int]:
    return [BOS_ID, *lm.tokenizer.encode(text).ids, *([EOS_ID] if eos else [])]


def nbest(lm: HybridLanguageModel) -> list[list[int]]:
    """Lists around shared contexts: one-swap variants, as a recognizer's n-best."""
    rng = random.Random(0)
    out = []
    for line in TINY_LINES[:10]:
        for _ in range(4):
            chars = list(line)
            chars[rng.randrange(len(chars))] = rng.choice("".join(TINY_LINES))
            out.append(ids(lm, "".join(chars)))
    return out


def close(a: torch.Tensor, b: torch.Tensor, tol: float = TOL) -> None:
    torch.testing.assert_close(a, b, atol=tol, rtol=0)  # equal infinities (<pad>, <bos>) pass


# -- the n-gram: contexts as ids, tables as tensors ------------------------------------------------
@pytest.mark.parametrize("dense_min_seen", [1, 3, 10**9])  # every, some, no ready bigram rows
def test_context_distributions_equal_the_numpy_tables(kn4, tok, dense_min_seen):
    tables = TorchBackoffTables(kn4.tables, dense_min_seen=dense_min_seen)
    seqs = [with_boundaries(tok.encode(s).ids) for s in TINY_LINES[:10]]
    inputs = torch.tensor([i for s in seqs for i in s[:-1]])
    position = torch.tensor([p for s in seqs for p in range(len(s) - 1)])
    hist = histories_of(inputs, position, 3)
    ours = tables.context_logprobs(tables.context_indices(hist))
    ref = torch.from_numpy(kn4.tables.next_logprobs(hist.numpy())).float()
    assert (len(tables.dense_rows) > 1) == (dense_min_seen < 10**9)
    close(ours, ref)


def test_stacked_tables_with_ready_rows_look_each_row_up_in_its_own_table(kn4, tok):
    other = build_ngram(tok, TINY_LINES[::2], order=4)
    stacked = TorchBackoffTables([kn4.tables, other.tables], dense_min_seen=2)
    assert len(stacked.dense_rows) > 2  # ready rows of both tables
    seq = with_boundaries(tok.encode(TINY_LINES[8] + TINY_LINES[6]).ids)
    hist = histories_of(torch.tensor(seq[:-1]), torch.arange(len(seq) - 1), 3)
    group = torch.arange(len(hist)) % 2
    out = stacked.next_logprobs(hist, group)
    for g, ngram in enumerate((kn4, other)):
        close(out[group == g], torch.from_numpy(ngram.tables.next_logprobs(hist[group == g].numpy())).float())


def test_advancing_contexts_and_tree_contexts_equal_contexts_from_histories(kn4, lm):
    tables = lm.tables
    seqs = [*nbest(lm)[:12], [BOS_ID], [BOS_ID, EOS_ID]]
    tree = build_tree(seqs)
    nodes = tables.tree_contexts(torch.tensor(tree.parent), torch.tensor(tree.token))
    for s, path in zip(seqs, tree.paths, strict=True):
        contexts = tables.start_contexts(1)
        for t, node in enumerate(path):
            contexts = tables.advance(contexts, torch.tensor([s[t]]))
            want = tables.context_indices(torch.from_numpy(histories_array([s[: t + 1]], kn4.order)))
            assert torch.equal(contexts, want)
            assert torch.equal(nodes[node], want[0])


# -- the hybrid's fast paths -----------------------------------------------------------------------
def test_the_hybrid_is_a_recurrent_model_that_shares_prefixes(lm):
    seqs = nbest(lm)
    queries = [s[:5] for s in seqs[:6]] + [[BOS_ID]]
    res = lm.score_tree(seqs, queries, with_state=True)
    assert isinstance(lm, RecurrentLanguageModel) and res.tree is not None
    assert res.computed < res.requested  # the trie bound, not every position of every candidate
    for got, want in zip(res.logprobs, lm.sequence_logprobs(seqs), strict=True):
        close(got, want)
    assert res.next_logprobs is not None
    close(res.next_logprobs, lm.next_token_logprobs(queries))
    # the states carry on decoding as prefill's do
    step_lp, _ = lm.step(res.states, torch.tensor([q[-1] if len(q) > 1 else BOS_ID for q in queries]))
    _, prefilled = lm.prefill(queries)
    want_lp, _ = lm.step(prefilled, torch.tensor([q[-1] if len(q) > 1 else BOS_ID for q in queries]))
    close(step_lp, want_lp)


def test_output_chunks_read_their_own_rows_contexts(lm):
    seqs = nbest(lm)
    whole = lm.score_tree(seqs, [s[:4] for s in seqs[:3]])
    chunked = lm.score_tree(seqs, [s[:4] for s in seqs[:3]], max_logits=3 * lm.vocab_size)  # 3 rows a chunk
    for a, b in zip(whole.logprobs, chunked.logprobs, strict=True):
        close(a, b)
    assert whole.next_logprobs is not None and chunked.next_logprobs is not None
    close(whole.next_logprobs, chunked.next_logprobs)


def test_a_decoding_step_runs_the_explicit_cells(lm, monkeypatch):
    def fused(*args, **kwargs):
        raise AssertionError("the fused nn.LSTM ran in a decoding step")

    monkeypatch.setattr(lm.net.rnn, "forward", fused)
    state = lm.start_state(3)
    for token in ids(lm, "厨房里食油", eos=False):
        logp, state = lm.step(state, torch.full((3,), token))
    assert torch.allclose(logp.exp().sum(-1), torch.ones(3), atol=1e-5)


def test_the_prefix_state_cache_serves_the_hybrid(lm):
    cache = PrefixStateCache(1 << 20)
    text = "厨房里食油用完了"
    computed = []
    for n in range(1, len(text) + 1):
        query = ids(lm, text[:n], eos=False)
        res = lm.score_tree([], [query], cache=cache)
        computed.append(res.computed)
        assert res.next_logprobs is not None
        close(res.next_logprobs, lm.next_token_logprobs([query]))
    assert computed == [2] + [1] * (len(text) - 1)  # <bos> 厨, then one position a character
    assert len(cache) > 0 and cache.stats.hits == len(text) - 1
    # a list scored from its cached context equals it scored alone
    lists = [ids(lm, text + "我们"), ids(lm, text + "他们")]
    res = lm.score_tree(lists, cache=cache)
    assert res.computed < res.requested - len(text)
    for got, want in zip(res.logprobs, lm.sequence_logprobs(lists), strict=True):
        close(got, want)


def wide(tok: Tokenizer, ngram: NGramLanguageModel) -> HybridLanguageModel:
    """Wide enough (hidden 96) that a float32 product's blocking shows in the last bits."""
    return hybrid(tok, ngram, hidden=96, seed=1)


def neighbours(lm: HybridLanguageModel, count: int, seed: int) -> list[list[int]]:
    rng = random.Random(seed)
    chars = "".join(TINY_LINES)
    out = []
    for i in range(count):
        text = "".join(rng.choice(chars) for _ in range(rng.randint(1, 30)))
        out.append(ids(lm, (MINE[i % 3][: rng.randint(1, 4)] if i % 2 else "") + text))
    return out


def score_among(lm: HybridLanguageModel, before: int, after: int, seed: int) -> tuple:
    mine = [ids(lm, t) for t in MINE]
    queries = [ids(lm, t, eos=False) for t in MINE]
    pre, post = neighbours(lm, before, seed), neighbours(lm, after, seed + 1)
    res = lm.score_tree(
        pre + mine + post, [s[:-1] for s in pre] + queries + [s[:-1] for s in post], with_state=True
    )
    rows = slice(before, before + len(mine))
    return res.logprobs[rows], res.next_logprobs[rows], res.states[0][:, rows], res.states[1][rows]


def test_batch_invariant_hybrid_scores_equal_alone_and_among_neighbours(tok, kn4):
    lm = wide(tok, kn4)
    lm.set_numerics(batch_invariant=True)
    assert lm.describe()["batch_invariant"] is True
    alone = score_among(lm, 0, 0, 0)
    for before, after in [(1, 0), (3, 4), (6, 0), (0, 13), (37, 29)]:
        got = score_among(lm, before, after, before + after)
        assert all(torch.equal(a, b) for a, b in zip(alone[0], got[0], strict=True)), (before, after)
        for a, b in zip(alone[1:], got[1:], strict=True):
            assert torch.equal(a, b), (before, after)


def test_a_batch_invariant_step_of_one_row_equals_the_row_in_a_batch(tok, kn4):
    lm = wide(tok, kn4)
    lm.set_numerics(batch_invariant=True)
    lp, state = lm.prefill([s[:-1] for s in neighbours(lm, 40, seed=3)])
    tokens = lp.argmax(-1)
    all_lp, all_state = lm.step(state, tokens)
    for row in (0, 7, 39):
        one_lp, one_state = lm.step(lm.select_state(state, [row]), tokens[row : row + 1])
        assert torch.equal(one_lp[0], all_lp[row])
        assert torch.equal(one_state[0][:, 0], all_state[0][:, row])
        assert torch.equal(one_state[1][0], all_state[1][row])


@pytest.mark.skipif(not bf16_supported("cpu"), reason="this CPU has no native bfloat16 products")
def test_bf16_hybrid_scores_close_to_fp32_with_float32_results(tok, kn4):
    lm = wide(tok, kn4)
    seqs = nbest(lm)
    want = lm.score_tree(seqs)
    lm.set_numerics("bf16")
    assert lm.describe()["precision"] == "bf16"
    got = lm.score_tree(seqs, [[BOS_ID]], with_state=True)
    diffs = [float((a - b).abs().max()) for a, b in zip(got.logprobs, want.logprobs, strict=True)]
    assert 0 < max(diffs) < 0.1  # bf16 really ran, and stays near
    assert got.next_logprobs is not None and got.next_logprobs.dtype == torch.float32
    logp, state = lm.step(lm.start_state(2), torch.tensor([BOS_ID, BOS_ID]))
    assert logp.dtype == torch.float32 and state[0].dtype == torch.float32
    lm.set_numerics("fp32")
    for a, b in zip(lm.score_tree(seqs).logprobs, want.logprobs, strict=True):
        assert torch.equal(a, b)


# -- checkpoints written today ---------------------------------------------------------------------
HYBRID_KEYS = {
    "rnn.embedding.weight",
    "rnn.decoder.weight",
    "rnn.decoder.bias",
    *(f"rnn.rnn.{w}_l{k}" for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh") for k in (0, 1)),
    "beta.weight",
    "beta.bias",
}


def reference_logprobs(net: HybridNet, ngram: NGramLanguageModel, seq: list[int]) -> torch.Tensor:
    """The hybrid's definition, computed the plain way: the fused LSTM over the sequence, the
    numpy n-gram's distribution after every prefix, logits + softplus(w·h + b) · ln P_ngram."""
    with torch.no_grad():
        feats, _ = net.rnn.hidden(torch.tensor([seq[:-1]]))  # (1, T, D)
        logits = net.rnn.decoder(feats[0]).index_fill(-1, net.rnn.never_predict, float("-inf"))
        beta = F.softplus(feats[0] @ net.beta.weight.t() + net.beta.bias)  # (T, 1)
        hist = histories_array([seq[: t + 1] for t in range(len(seq) - 1)], ngram.order)
        ngram_lp = torch.from_numpy(ngram.tables.next_logprobs(hist)).float().clamp(min=NGRAM_FLOOR)
        logp = torch.log_softmax(logits + beta * ngram_lp, dim=-1)
        return logp.gather(1, torch.tensor(seq[1:]).unsqueeze(1)).squeeze(1).double()


def test_a_checkpoint_written_today_loads_and_scores_as_the_reference(tok, kn4, tmp_path):
    save_ngram(tmp_path / "kn4", kn4)
    lm = hybrid(tok, kn4)
    assert set(lm.hybrid.state_dict()) == HYBRID_KEYS  # the layout model/training/fit.py writes and loads
    save_hybrid(tmp_path / "hyb", lm.hybrid, tok, tmp_path / "kn4", dtype=torch.float16)
    loaded = load_model(tmp_path / "hyb")
    assert isinstance(loaded, HybridLanguageModel)
    seqs = [ids(loaded, s) for s in TINY_LINES[:10]]
    want = [reference_logprobs(loaded.hybrid, loaded.ngram, s) for s in seqs]
    for got in (loaded.sequence_logprobs(seqs), loaded.score_tree(seqs).logprobs):
        for a, b in zip(got, want, strict=True):
            close(a, b)
    state = loaded.start_state(len(seqs))
    for t in range(max(len(s) for s in seqs) - 1):
        logp, state = loaded.step(state, torch.tensor([s[min(t, len(s) - 1)] for s in seqs]))
        for r, s in enumerate(seqs):
            if t + 1 < len(s):
                assert abs(float(logp[r, s[t + 1]]) - float(want[r][t])) < TOL
    assert float(logp[0, PAD_ID]) == -np.inf


# -- served through the engine -----------------------------------------------------------------------
def test_typing_into_the_engine_computes_one_position_per_character(lm):
    text = "厨房里食油用完了我们去买"
    config = EngineConfig(max_wait_ms=0, prefix_cache_bytes=1 << 20, warmup=False)

    async def typing(engine: Engine) -> tuple[list[int], list[torch.Tensor]]:
        computed, dists = [], []
        for n in range(len(text) + 1):
            before = engine.stats.positions_computed
            [dist] = await engine.next_token([ids(lm, text[:n], eos=False)], top_k=5)
            computed.append(engine.stats.positions_computed - before)
            dists.append(dist.logprobs)
        return computed, dists

    async def main() -> tuple:
        async with (
            Engine(lm, config) as cached,
            Engine(lm, EngineConfig(max_wait_ms=0, warmup=False)) as plain,
        ):
            return await typing(cached), await typing(plain)

    (computed, dists), (plain_computed, plain_dists) = asyncio.run(asyncio.wait_for(main(), timeout=60))
    assert computed == [1] * (len(text) + 1)  # <bos>, then one position per new character
    assert plain_computed == list(range(1, len(text) + 2))  # without the cache: the whole prefix
    for a, b in zip(dists, plain_dists, strict=True):
        close(a, b)


def test_generation_through_the_engine_follows_the_models_own_steps(lm):
    request = GenerationRequest("厨房", max_new_tokens=6, sampling=SamplingParams(seed=3, temperature=0.7))

    async def main() -> list[tuple[int, float]]:
        async with (
            Engine(lm, EngineConfig(max_wait_ms=0, warmup=False)) as engine,
            engine.generate(request) as stream,
        ):
            return [(event.token_id, event.logprob) async for event in stream]

    events = asyncio.run(asyncio.wait_for(main(), timeout=60))
    assert 1 <= len(events) <= 6
    logprobs, state = lm.prefill([ids(lm, "厨房", eos=False)])
    for token, logprob in events:  # each token's log-prob is the model's, stepped by hand
        assert abs(float(logprobs[0, token]) - logprob) < TOL
        logprobs, state = lm.step(state, torch.tensor([token]))
