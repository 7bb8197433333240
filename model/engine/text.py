"""Text in, text out, through the engine: :mod:`model.scoring`'s steps with the engine's log-probs.

The same preparation, ranking and result types as :func:`model.scoring.score_candidates` and
:func:`model.scoring.next_token_distribution`; only the log-probs come from :meth:`Engine.score` /
:meth:`Engine.next_token`, so concurrent requests share batches and the candidates of a list
share their prefixes. ``Ranking.positions`` is the positions computed (the request's trie bound).

The steps in Python (tokenizing a megabyte of candidates, ranking them, describing distributions)
run in a worker thread (``asyncio.to_thread``), so the caller's event loop stays free meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from ..scoring import (
    NextToken,
    Ranking,
    ScoreOptions,
    combine_scores,
    describe_next,
    next_token_prefixes,
    prepare_candidates,
)
from .core import Engine


async def score_candidates(
    engine: Engine,
    candidates: Sequence[str],
    options: ScoreOptions | None = None,
    external_scores: Sequence[float] | None = None,
    timeout_s: float | None = None,
) -> Ranking:
    options = options or ScoreOptions()
    prepared = await asyncio.to_thread(
        prepare_candidates, engine.lm.tokenizer, list(candidates), options, external_scores
    )
    res = await engine.score([c.ids for c in prepared], timeout_s=timeout_s)
    ranking = await asyncio.to_thread(combine_scores, prepared, res.token_logprobs, options, external_scores)
    ranking.positions = res.positions_computed
    return ranking


async def next_token_distribution(
    engine: Engine, texts: Sequence[str], top_k: int = 10, timeout_s: float | None = None
) -> list[NextToken]:
    tokenizer = engine.lm.tokenizer
    encodings, prefixes = await asyncio.to_thread(next_token_prefixes, tokenizer, list(texts), top_k)
    dists = await engine.next_token(prefixes, top_k=top_k, timeout_s=timeout_s)
    return await asyncio.to_thread(describe_next, tokenizer, encodings, dists)
