"""The prefix-state cache: results with it equal results without it, one request never sees
another's text through it, it keeps its byte bound, and typing costs one position per character.

Tolerance. A pass that starts from a cached state runs the same cells on the same values, but
its matrix products see other row counts than a pass from ``<bos>`` (the input projections run
over all of a pass's rows at once), and on the CPU a row's result of a product may move in the
last bits with the row count (issue 14 item 5: up to ~1.4e-6 per token between batches). So
results with and without the cache are compared within ``TOL`` = 1e-5 per log-prob and state
value, the bound the prefix tests use for the explicit cells against the fused kernel. What the
cache hands back is compared exactly: it is the very state and log-probs its pass computed.
"""

from __future__ import annotations

import asyncio
import random

import pytest
import torch

from model.inference.engine import Engine, EngineConfig
from model.models.lm import LanguageModel, RNNLanguageModel
from model.models.ngram.model import build_ngram
from model.models.prefix import score_tree
from model.models.state_cache import NODE_BYTES, PrefixStateCache
from model.text.tokenizer import BOS_ID, EOS_ID

from ..conftest import TINY_LINES, build_tiny_model

TOL = 1e-5


@pytest.fixture(scope="module", params=["lstm", "gru", "rnn_tanh"])
def lm(request: pytest.FixtureRequest) -> RNNLanguageModel:
    net, tok = build_tiny_model(cell=request.param, steps=10)
    return RNNLanguageModel(net, tok)


@pytest.fixture(scope="module")
def lstm() -> RNNLanguageModel:
    net, tok = build_tiny_model(cell="lstm", steps=10)
    return RNNLanguageModel(net, tok)


def ids(lm: LanguageModel, text: str, eos: bool = True) -> list[int]:
    return [BOS_ID, *lm.tokenizer.encode(text).ids, *([EOS_ID] if eos else [])]


def close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, atol=TOL, rtol=0)  # equal infinities (<pad>, <bos>) pass


def random_batch(rng: random.Random, vocab: int) -> tuple[list[list[int]], list[list[int]]]:
    """Candidates around a shared context, and queries that extend or cut it."""
    context = [BOS_ID] + [rng.randrange(3, vocab) for _ in range(rng.randrange(0, 8))]
    seqs = [
        context + [rng.randrange(3, vocab) for _ in range(rng.randrange(0, 4))] + [EOS_ID]
        for _ in range(rng.randrange(0, 4))
    ]
    queries = [
        context[: rng.randrange(1, len(context) + 1)]
        + [rng.randrange(3, vocab) for _ in range(rng.randrange(0, 3))]
        for _ in range(rng.randrange(0, 3))
    ]
    return seqs, queries


# -- equality ------------------------------------------------------------------------------------
def test_results_with_the_cache_equal_results_without(lm):
    rng = random.Random(0)
    cache = PrefixStateCache(1 << 20)
    for _ in range(150):
        seqs, queries = random_batch(rng, lm.vocab_size)
        plain = score_tree(lm, seqs, queries, with_state=True)
        cached = score_tree(lm, seqs, queries, with_state=True, cache=cache)
        for a, b in zip(plain.logprobs, cached.logprobs, strict=True):
            close(a, b)
        if queries:
            assert plain.next_logprobs is not None and cached.next_logprobs is not None
            close(plain.next_logprobs, cached.next_logprobs)
            close(plain.states, cached.states)
        assert cached.requested == plain.requested and cached.computed <= plain.computed
    assert cache.stats.hits > 100 and cache.stats.misses > 0  # the comparison exercised the cache


@pytest.mark.parametrize("cell", ["lstm", "rnn_tanh"])
def test_with_batch_invariant_products_the_cache_is_exact(cell):
    """With every product on fixed row tiles (RNNLM_BATCH_INVARIANT), a pass from a cached state
    does the same arithmetic as a pass from <bos>: the results are bit-identical."""
    net, tok = build_tiny_model(cell=cell, steps=10)
    lm = RNNLanguageModel(net, tok)
    if not hasattr(lm, "set_numerics"):
        pytest.skip("this tree has no batch-invariant products")
    lm.set_numerics("fp32", True)
    rng = random.Random(2)
    cache = PrefixStateCache(1 << 20)
    for _ in range(60):
        seqs, queries = random_batch(rng, lm.vocab_size)
        plain = score_tree(lm, seqs, queries, with_state=True)
        cached = score_tree(lm, seqs, queries, with_state=True, cache=cache)
        assert all(torch.equal(a, b) for a, b in zip(plain.logprobs, cached.logprobs, strict=True))
        if queries:
            assert plain.next_logprobs is not None and cached.next_logprobs is not None
            assert torch.equal(plain.next_logprobs, cached.next_logprobs)
            assert torch.equal(plain.states, cached.states)
    assert cache.stats.hits > 40


def test_a_first_pass_is_unchanged_and_the_cache_returns_what_it_computed(lstm):
    seqs = [ids(lstm, "厨房里食油用完了"), ids(lstm, "厨房里石油用完了")]
    query = ids(lstm, "厨房里", eos=False)
    cache = PrefixStateCache(1 << 20)
    plain = score_tree(lstm, seqs, [query], with_state=True)
    first = score_tree(lstm, seqs, [query], with_state=True, cache=cache)  # empty cache: same plan
    for a, b in zip(plain.logprobs, first.logprobs, strict=True):
        assert torch.equal(a, b)
    assert first.next_logprobs is not None and plain.next_logprobs is not None
    assert torch.equal(plain.next_logprobs, first.next_logprobs)
    entry = cache.get(query)  # the query's prefix, and where the candidates part, are kept
    assert entry is not None and torch.equal(entry.state, first.states[:, 0])
    assert torch.equal(entry.logprobs.double().cpu(), first.logprobs[0][: len(query) - 1])
    for seq, lps in zip(seqs, first.logprobs, strict=True):  # each candidate's last fed prefix
        kept = cache.get(seq[:-1])
        assert kept is not None and torch.equal(kept.logprobs.double().cpu(), lps[:-1])
    again = score_tree(lstm, seqs, [query], with_state=True, cache=cache)
    assert again.computed == 0  # everything came from the cache: only the output rows ran
    for a, b in zip(plain.logprobs, again.logprobs, strict=True):
        close(a, b)


# -- isolation -----------------------------------------------------------------------------------
def test_a_cached_prefix_serves_only_requests_that_start_with_it(lstm):
    """Poison the entry of request A's prefix: a request reads it if and only if its own tokens
    start with exactly that prefix (keys are whole prefixes; values hold no other text)."""
    a_text = ids(lstm, "厨房里食油用完了")
    a_prefix = a_text[:5]  # <bos> 厨 房 里 食
    state = score_tree(lstm, [], [a_prefix], with_state=True).states[:, 0]  # (L, S)

    def poisoned() -> PrefixStateCache:  # holds A's prefix only, and keeps nothing new
        cache = PrefixStateCache(1 << 20, max_store_per_pass=0)
        nan = float("nan")
        cache.put(a_prefix, torch.full_like(state, nan), torch.full((len(a_prefix) - 1,), nan))
        return cache

    others = [
        ids(lstm, "厨房里石油用完了"),  # shares <bos> 厨 房 里, not 食
        ids(lstm, "厨房里"),  # a prefix of A's prefix
        [BOS_ID, *a_prefix[2:], EOS_ID],  # A's tokens without its first character
        ids(lstm, "房里食油"),
    ]
    for seq in others:
        cache = poisoned()
        got = score_tree(lstm, [seq], [seq[:-1]], cache=cache)
        assert cache.stats.hits == 0 and cache.stats.misses == 2, seq
        assert torch.isfinite(got.logprobs[0]).all(), seq
        close(got.logprobs[0], score_tree(lstm, [seq]).logprobs[0])
    for seq in (a_text, [*a_prefix, EOS_ID], ids(lstm, "厨房里食盐")):  # these start with A's prefix
        cache = poisoned()
        got = score_tree(lstm, [seq], cache=cache)
        assert cache.stats.hits == 1 and torch.isnan(got.logprobs[0]).any(), seq


def test_match_tree_finds_exactly_the_prefixes_of_each_node():
    cache = PrefixStateCache(1 << 20)
    keys = [(1, 5), (1, 5, 6), (1, 5, 6, 7), (1, 6), (1, 5, 7)]
    for key in keys:
        cache.put(key, torch.zeros(2, 4), torch.zeros(len(key) - 1))
    # tree: 1 -> 5 -> 6 -> 8, and 1 -> 6 -> 7 (flat lists, parents first)
    parent = [-1, 0, 1, 2, 0, 4]
    token = [1, 5, 6, 8, 6, 7]
    found = cache.match_tree(parent, token)
    assert [f.length if f is not None else None for f in found] == [None, 2, 3, None, 2, None]
    assert found[2] is cache.get((1, 5, 6)) and found[4] is cache.get((1, 6))


# -- the byte bound ------------------------------------------------------------------------------
def test_eviction_keeps_the_byte_bound_and_drops_the_least_recently_used():
    entry_bytes = 2 * 8 * 4 + 3 * 4 + 4 * NODE_BYTES  # state (2, 8) float32, 3 log-probs, 4 trie nodes
    cache = PrefixStateCache(3 * entry_bytes)
    keys = [(1, 10 + i, 20 + i, 30 + i) for i in range(10)]
    for i, key in enumerate(keys):
        assert cache.put(key, torch.full((2, 8), float(i)), torch.zeros(3))
        assert cache.nbytes <= cache.max_bytes
        if i == 2:
            assert cache.get(keys[0]) is not None  # keys[0] is now the most recently used
    assert len(cache) == 2 or len(cache) == 3
    assert cache.get(keys[-1]) is not None and cache.get(keys[1]) is None
    assert cache.stats.evictions == 10 - len(cache)
    cache.clear()
    assert cache.nbytes == 0 and len(cache) == 0


def test_an_entry_larger_than_the_bound_is_refused_and_pruning_frees_nodes():
    cache = PrefixStateCache(2000)
    assert not cache.put(list(range(1, 9)), torch.zeros(2, 200), torch.zeros(7))  # 1600 + 8 nodes
    assert cache.nbytes == 0
    assert cache.put((1, 2), torch.zeros(2, 2), torch.zeros(1))
    assert cache.put((1, 2, 3), torch.zeros(2, 2), torch.zeros(2))
    assert cache.nbytes == 2 * 16 + 4 + 8 + 4 * NODE_BYTES  # 3 trie nodes and the scope's root
    with pytest.raises(ValueError, match="logprobs"):
        cache.put((1, 2, 3, 4), torch.zeros(2, 2), torch.zeros(1))


def test_scoring_passes_keep_the_bound_and_store_at_most_their_share(lstm):
    one = 2 * 2 * 16 * 4  # an LSTM entry's state: 2 layers × [h ; c] of 16
    cache = PrefixStateCache(6 * one + 40 * NODE_BYTES, max_store_per_pass=3)
    rng = random.Random(1)
    for _ in range(40):
        seqs, queries = random_batch(rng, lstm.vocab_size)
        stored = cache.stats.stored
        score_tree(lstm, seqs, queries, cache=cache)
        assert cache.stats.stored - stored <= 3
        assert cache.nbytes <= cache.max_bytes
    assert cache.stats.evictions > 0


def test_a_cache_belongs_to_one_model(lstm):
    cache = PrefixStateCache(1 << 20)
    score_tree(lstm, [ids(lstm, "厨房")], cache=cache)
    net, tok = build_tiny_model(cell="lstm", steps=10, seed=3)
    with pytest.raises(ValueError, match="another model"):
        score_tree(RNNLanguageModel(net, tok), [ids(lstm, "厨房")], cache=cache)


# -- the engine ----------------------------------------------------------------------------------
def run(coro):
    return asyncio.run(asyncio.wait_for(coro, timeout=60))


def test_typing_computes_one_position_per_character(lstm):
    text = "厨房里食油用完了我们去买"
    config = EngineConfig(max_wait_ms=0, prefix_cache_bytes=1 << 20, warmup=False)

    async def typing(engine: Engine) -> tuple[list[int], list[torch.Tensor]]:
        computed, dists = [], []
        for n in range(len(text) + 1):
            before = engine.stats.positions_computed
            [dist] = await engine.next_token([ids(lstm, text[:n], eos=False)], top_k=5)
            computed.append(engine.stats.positions_computed - before)
            dists.append(dist.logprobs)
        return computed, dists

    async def main() -> tuple:
        async with Engine(lstm, config) as cached, Engine(lstm, EngineConfig(max_wait_ms=0)) as plain:
            got = await typing(cached)
            want = await typing(plain)
            return got, want, cached.stats, cached.prefix_cache

    (computed, dists), (plain_computed, plain_dists), stats, cache = run(main())
    assert computed == [1] * (len(text) + 1)  # <bos>, then one position per new character
    assert plain_computed == list(range(1, len(text) + 2))  # without: the whole prefix each time
    for a, b in zip(dists, plain_dists, strict=True):
        close(a, b)
    assert stats.prefix_cache_hits == len(text) and stats.prefix_cache_misses == 1
    assert cache is not None and len(cache) == len(text) + 1


def test_the_engine_reuses_a_list_context_and_reports_it(lstm):
    from model.inference.engine import EngineObserver

    class Seen(EngineObserver):
        def __init__(self) -> None:
            self.calls: list[tuple[int, int, int, int, int]] = []

        def on_prefix_cache(self, hits, misses, evictions, bytes_delta, entries_delta):
            self.calls.append((hits, misses, evictions, bytes_delta, entries_delta))

    first = [ids(lstm, "厨房里食油用完了" + c) for c in "啊吧"]
    second = [ids(lstm, "厨房里食油用完了" + c) for c in "你我他"]
    seen = Seen()

    async def main() -> tuple:
        async with Engine(lstm, EngineConfig(max_wait_ms=0, prefix_cache_bytes=1 << 20), seen) as engine:
            await engine.score(first)
            before = engine.stats.positions_computed
            res = await engine.score(second)
            return res, engine.stats.positions_computed - before, engine.prefix_cache

    res, computed, cache = run(main())
    assert computed == 3  # the shared context came from the first list: one position per candidate
    for seq, lps in zip(second, res.token_logprobs, strict=True):
        close(torch.tensor(lps, dtype=torch.float64), lstm.sequence_logprobs([seq])[0])
    assert [c[:2] for c in seen.calls] == [(0, 2), (3, 0)]
    assert sum(c[3] for c in seen.calls) == cache.nbytes and sum(c[4] for c in seen.calls) == len(cache)


def test_models_without_rnn_states_ignore_the_cache(lstm):
    ngram = build_ngram(lstm.tokenizer, TINY_LINES[:10], 3, "kn")
    seqs = [ids(lstm, "厨房里食油"), ids(lstm, "厨房里石油")]

    async def main() -> tuple:
        async with Engine(ngram, EngineConfig(max_wait_ms=0, prefix_cache_bytes=1 << 20)) as engine:
            a = await engine.score(seqs)
            b = await engine.score(seqs)
            return a, b, engine.prefix_cache

    a, b, cache = run(main())
    assert a.token_logprobs == b.token_logprobs
    for seq, lps in zip(seqs, a.token_logprobs, strict=True):
        assert lps == ngram.sequence_logprobs([seq])[0].tolist()
    assert cache is not None and len(cache) == 0 and cache.nbytes == 0
