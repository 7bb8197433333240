"""POST /score: log-probs of candidates, combined with external scores and ranked (n-best reranking).

The route only translates HTTP to :func:`model.scoring.score_candidates` and back.
"""

from __future__ import annotations

from fastapi import APIRouter

from model.scoring import ScoreOptions

from ..deps import MetricsDep, RegistryDep, ScoreBody
from ..errors import ERROR_RESPONSES
from ..schemas import CandidateResult, ScoreResponse, TokenLogprob

router = APIRouter(tags=["model"])


@router.post("/score", summary="Score and rank candidates (n-best reranking)", responses=ERROR_RESPONSES)
async def score(body: ScoreBody, registry: RegistryDep, metrics: MetricsDep) -> ScoreResponse:
    runner = registry.get(body.model)
    options = ScoreOptions(
        context=body.context,
        bos=body.bos,
        eos=body.eos,
        lm_weight=body.lm_weight,
        length_bonus=body.length_bonus,
        normalize=body.normalize,
    )
    ranking = await runner.score(body.candidates, options, body.external_scores)
    metrics.tokens_scored.labels(runner.name).inc(ranking.tokens_scored)
    results = [
        CandidateResult(
            text=r.text,
            logprob=r.logprob,
            num_tokens=r.num_tokens,
            oov=r.oov,
            perplexity=r.perplexity,
            score=r.score,
            rank=r.rank,
            token_logprobs=[
                TokenLogprob(token=t, logprob=lp) for t, lp in zip(r.tokens, r.token_logprobs, strict=True)
            ]
            if body.per_token
            else None,
        )
        for r in ranking.results
    ]
    return ScoreResponse(model=runner.name, results=results, ranking=ranking.ranking)
