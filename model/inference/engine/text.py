"""Text in, text out, through the engine: :mod:`model.inference.scoring`'s steps with the engine's log-probs.

:func:`score_with_engine` is :func:`model.inference.scoring.score_candidates` and
:func:`next_token_with_engine` is :func:`model.inference.scoring.next_token_distribution`: the same
preparation, ranking and result types; only the log-probs come from :meth:`Engine.score` /
:meth:`Engine.next_token`, so concurrent requests share batches and the candidates of a list
share their prefixes. :func:`embed_with_engine` is :func:`model.inference.embedding.embed_texts`
through :meth:`Engine.embed`. ``Ranking.positions`` is the positions computed (the request's trie bound).

The steps in Python (tokenizing a megabyte of candidates, ranking them, describing distributions)
run in a worker thread (``asyncio.to_thread``), so the caller's event loop stays free meanwhile;
a small request (at most ``INLINE_CHARS`` characters, ``INLINE_ENTRIES`` next tokens) runs them
on the loop: they take microseconds there, and each hop to a thread and back costs more than that.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from model.inference.embedding import Embeddings, encode_texts
from model.inference.engine.core import Engine, PassTiming
from model.inference.scoring import (
    NextToken,
    Ranking,
    ScoreOptions,
    combine_scores,
    describe_next,
    next_token_prefixes,
    prepare_candidates,
)

INLINE_CHARS = 2_000  # texts up to this many characters in all are tokenized on the event loop
INLINE_ENTRIES = 200  # next-token answers up to this many entries (texts × top_k) are described there

T = TypeVar("T")


async def _off_loop_if(large: bool, fn: Callable[..., T], *args: object) -> T:
    """``fn(*args)`` in a worker thread when ``large``, else right here."""
    return await asyncio.to_thread(fn, *args) if large else fn(*args)


async def score_with_engine(
    engine: Engine,
    candidates: Sequence[str],
    options: ScoreOptions | None = None,
    external_scores: Sequence[float] | None = None,
    timeout_s: float | None = None,
) -> Ranking:
    """:func:`model.inference.scoring.score_candidates` with the engine's log-probs: score and rank
    ``candidates``, batched with concurrent requests."""
    options = options or ScoreOptions()
    candidates = list(candidates)
    large = sum(len(c) + len(options.context) for c in candidates) > INLINE_CHARS  # the context joins each
    prepared = await _off_loop_if(
        large, prepare_candidates, engine.lm.tokenizer, candidates, options, external_scores
    )
    res = await engine.score([c.ids for c in prepared], timeout_s=timeout_s)
    ranking = await _off_loop_if(
        large, combine_scores, prepared, res.token_logprobs, options, external_scores
    )
    ranking.positions = res.positions_computed
    return ranking


async def next_token_with_engine(
    engine: Engine,
    texts: Sequence[str],
    top_k: int = 10,
    timeout_s: float | None = None,
    stages: dict[str, float] | None = None,
) -> list[NextToken]:
    """The next-token distributions after ``texts``. ``stages``, if given, receives where the time
    went, in seconds, stage after stage (they add up to this call's time): ``tokenize``, ``queue``
    (waiting for the engine's worker), ``model`` (the network's pass), ``topk`` (top-k and entropy),
    ``handoff`` (the answer's way back to the event loop), ``describe`` (ids to text)."""
    tokenizer = engine.lm.tokenizer
    texts = list(texts)
    t0 = time.perf_counter()
    large_text = sum(len(t) for t in texts) > INLINE_CHARS
    encodings, prefixes = await _off_loop_if(large_text, next_token_prefixes, tokenizer, texts, top_k)
    t1 = time.perf_counter()
    timing = PassTiming() if stages is not None else None
    dists = await engine.next_token(prefixes, top_k=top_k, timeout_s=timeout_s, timing=timing)
    t2 = time.perf_counter()
    found = await _off_loop_if(
        len(texts) * top_k > INLINE_ENTRIES, describe_next, tokenizer, encodings, dists
    )
    if stages is not None and timing is not None:
        in_engine = timing.queue_s + timing.model_s + timing.select_s
        stages.update(
            tokenize=t1 - t0,
            queue=timing.queue_s,
            model=timing.model_s,
            topk=timing.select_s,
            handoff=max(0.0, (t2 - t1) - in_engine),
            describe=time.perf_counter() - t2,
        )
    return found


async def embed_with_engine(
    engine: Engine,
    texts: Sequence[str],
    pooling: str = "last",
    normalize: bool = False,
    timeout_s: float | None = None,
) -> Embeddings:
    """:func:`model.inference.embedding.embed_texts` with the engine: each text's vector, batched
    with concurrent requests. A model kind without hidden states raises
    :class:`~model.models.lm.NoHiddenStates` before anything is tokenized."""
    engine.lm.embedding_dim  # noqa: B018  (NoHiddenStates at once)
    texts = list(texts)
    ids = await _off_loop_if(sum(map(len, texts)) > INLINE_CHARS, encode_texts, engine.lm.tokenizer, texts)
    vectors = await engine.embed(ids, pooling=pooling, normalize=normalize, timeout_s=timeout_s)
    return Embeddings(vectors, [len(s) for s in ids], pooling, normalize)
