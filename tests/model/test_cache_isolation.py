"""Prefix-state cache scopes: a cached prefix is reused only by requests of the scope that put it
there (the service's tenant, one per API key, and a request's `cache_salt`), so one client cannot
tell by timing what another asked for. Within a scope nothing changes; across scopes a request
runs as if the cache were empty, even when it shares a batch with the other scope's request."""

from __future__ import annotations

import asyncio

import pytest
import torch

from model.inference.engine import Engine, EngineConfig
from model.models.lm import RNNLanguageModel
from model.models.prefix import build_tree, score_tree
from model.models.state_cache import NODE_BYTES, PrefixStateCache, cache_scope, scope_key

from ..conftest import build_tiny_model
from .test_state_cache import TOL, ids

A, B = scope_key("tenant-a"), scope_key("tenant-b")


@pytest.fixture(scope="module")
def lstm() -> RNNLanguageModel:
    net, tok = build_tiny_model(cell="lstm", steps=10)
    return RNNLanguageModel(net, tok)


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, timeout=60))


# -- the cache itself ---------------------------------------------------------------------------------
def test_an_entry_serves_only_its_own_scope():
    cache = PrefixStateCache(1 << 20)
    cache.put((2, 5, 6), torch.zeros(2, 4), torch.zeros(2), scope=A)
    assert cache.get((2, 5, 6), scope=A) is not None
    assert cache.get((2, 5, 6), scope=B) is None and cache.get((2, 5, 6)) is None
    parent, token = [-1, 0, 1], [2, 5, 6]
    assert cache.match_tree(parent, token, [A] * 3)[2] is not None
    assert cache.match_tree(parent, token, [B] * 3) == [None, None, None]


def test_scope_keys_are_fixed_size_and_differ_by_every_part():
    keys = {scope_key(), scope_key("a"), scope_key("b"), scope_key("a", "s"), scope_key("", "a")}
    assert len(keys) == 5
    assert {len(k) for k in keys} == {len(scope_key("x" * 10_000))}
    assert scope_key("a", "s") == scope_key("a", "s")


def test_each_scope_costs_its_own_root_and_an_emptied_scope_is_dropped():
    entry = 2 * 4 * 4 + 1 * 4 + 2 * NODE_BYTES  # state, one log-prob, two trie nodes
    cache = PrefixStateCache(10 * (entry + NODE_BYTES))
    for i in range(100):  # a hundred tenants, one entry each: the bound holds, old scopes leave
        assert cache.put((2, 7), torch.zeros(2, 4), torch.zeros(1), scope=scope_key(str(i)))
        assert cache.nbytes <= cache.max_bytes
    assert cache.nbytes == len(cache) * (entry + NODE_BYTES)  # each kept entry with its scope's root
    assert cache.get((2, 7), scope=scope_key("99")) is not None
    assert cache.get((2, 7), scope=scope_key("0")) is None
    cache.clear()
    assert cache.nbytes == 0


# -- a pass ---------------------------------------------------------------------------------------------
def test_sequences_of_different_scopes_share_no_node():
    seqs = [[2, 5, 6, 3], [2, 5, 6, 3], [2, 5, 7, 3]]
    tree = build_tree(seqs, [[2, 5]], scopes=[A, B, A, B])
    assert tree.paths[0] != tree.paths[1] and tree.paths[0][:2] == tree.paths[2][:2]
    assert tree.query_nodes[0] == tree.paths[1][1]  # the query (scope B) shares B's sequence's nodes
    assert [tree.scope[p[0]] for p in tree.paths] == [A, B, A]
    assert build_tree(seqs).paths[0] == build_tree(seqs).paths[1]  # one scope: shared as before


def test_a_pass_reads_and_fills_only_its_scope(lstm):
    text = ids(lstm, "厨房里食油用完了")
    cache = PrefixStateCache(1 << 20)
    plain = score_tree(lstm, [text])
    first = score_tree(lstm, [text], cache=cache, scopes=[A])
    other = score_tree(lstm, [text], cache=cache, scopes=[B])
    assert cache.stats.hits == 0 and other.computed == first.computed == plain.computed
    again = score_tree(lstm, [text], cache=cache, scopes=[A])
    assert cache.stats.hits == 1 and again.computed < first.computed
    for res in (first, other, again):
        torch.testing.assert_close(res.logprobs[0], plain.logprobs[0], atol=TOL, rtol=0)


# -- the engine -----------------------------------------------------------------------------------------
def test_the_engine_keeps_scopes_apart(lstm):
    prefix = ids(lstm, "厨房里食油用完", eos=False)

    async def main() -> Engine:
        config = EngineConfig(max_wait_ms=0, prefix_cache_bytes=1 << 20)
        async with Engine(lstm, config) as engine:
            await engine.next_token([prefix], cache_scope=A)
            before = engine.stats.positions_computed
            await engine.next_token([prefix], cache_scope=B)  # another tenant: computed in full
            assert engine.stats.positions_computed - before == len(prefix)
            assert engine.stats.prefix_cache_hits == 0
            with cache_scope(A):  # the context's scope, as the service sets it per request
                before = engine.stats.positions_computed
                await engine.next_token([prefix])
                assert engine.stats.positions_computed - before < len(prefix)
            assert engine.stats.prefix_cache_hits == 1
            return engine

    run(main())


def test_one_batch_of_two_scopes_answers_each_as_alone(lstm):
    seqs = [ids(lstm, "厨房里食油用完了"), ids(lstm, "厨房里石油用完了")]

    async def main() -> list:
        config = EngineConfig(max_wait_ms=50, prefix_cache_bytes=1 << 20)
        async with Engine(lstm, config) as engine:
            await engine.score(seqs, cache_scope=A)  # A's prefixes are cached
            hits = engine.stats.prefix_cache_hits
            both = await asyncio.gather(engine.score(seqs, cache_scope=A), engine.score(seqs, cache_scope=B))
            assert engine.stats.kinds["score"].batches == 2  # the two went in one batch
            assert engine.stats.prefix_cache_hits - hits == len(seqs)  # A's sequences only
            return both

    a, b = run(main())
    plain = score_tree(lstm, seqs)
    for res in (a, b):
        for got, want in zip(res.token_logprobs, plain.logprobs, strict=True):
            assert got == pytest.approx(want.tolist(), abs=TOL)
