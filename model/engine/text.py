"""Text in, text out, through the engine: the same results as :mod:`model.scoring`, batched.

These mirror :func:`model.scoring.score_candidates` and :func:`model.scoring.next_token_distribution`
(same layout of candidates, same ranking, same result types), but the log-probs come from
:meth:`Engine.score` / :meth:`Engine.next_token`, so concurrent requests share batches and the
candidates of a list share their prefixes. ``Ranking.positions`` is the positions computed (the
request's trie bound), not the positions requested.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..scoring import (
    NextToken,
    Ranking,
    ScoreOptions,
    TokenProb,
    combine_scores,
    prepare_candidates,
)
from ..tokenizer import BOS_ID, SPECIALS
from .core import Engine


async def score_candidates(
    engine: Engine,
    candidates: Sequence[str],
    options: ScoreOptions | None = None,
    external_scores: Sequence[float] | None = None,
    timeout_s: float | None = None,
) -> Ranking:
    options = options or ScoreOptions()
    if external_scores is not None and len(external_scores) != len(candidates):
        raise ValueError(
            f"external_scores has {len(external_scores)} values for {len(candidates)} candidates"
        )
    prepared = prepare_candidates(engine.lm.tokenizer, candidates, options)
    res = await engine.score([c.ids for c in prepared], timeout_s=timeout_s)
    logprobs = [torch.tensor(t, dtype=torch.float64) for t in res.token_logprobs]
    ranking = combine_scores(prepared, logprobs, options, external_scores)
    ranking.positions = res.positions_computed
    return ranking


async def next_token_distribution(
    engine: Engine, texts: Sequence[str], top_k: int = 10, timeout_s: float | None = None
) -> list[NextToken]:
    if top_k < 1:
        raise ValueError("top_k must be at least 1")
    tok = engine.lm.tokenizer
    encodings = [tok.encode(t) for t in texts]
    dists = await engine.next_token([[BOS_ID, *e.ids] for e in encodings], top_k=top_k, timeout_s=timeout_s)
    return [
        NextToken(
            tokens=enc.tokens,
            oov=enc.oov,
            entropy=d.entropy,
            next=[
                TokenProb(token=tok.piece(i), id=i, prob=math.exp(lp), logprob=lp, special=i < len(SPECIALS))
                for i, lp in zip(d.top_ids, d.top_logprobs, strict=True)
                if math.isfinite(lp)  # a token the model cannot produce is not a candidate
            ],
        )
        for enc, d in zip(encodings, dists, strict=True)
    ]
