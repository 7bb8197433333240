"""POST /score: log-probs of candidates, combined with external scores and ranked (n-best reranking).

The route goes down once: :func:`service.rescoring.plan_scoring` reads the request into a plan
(which models score, with what weights; every 4xx), :func:`service.rescoring.run_plan` runs it
(refused by cost first, then each model's runner and the rescoring formula), and the route
answers.
"""

from __future__ import annotations

from fastapi import APIRouter

from ..deps import MetricsDep, OffLoopBodyRoute, RegistryDep, ScoreBody, SettingsDep
from ..errors import ERROR_RESPONSES
from ..rescoring import plan_scoring, run_plan
from ..schemas import CandidateResult, ScoreResponse, SweepResult, TokenLogprob

router = APIRouter(tags=["model"], route_class=OffLoopBodyRoute)


@router.post("/score", summary="Score and rank candidates (n-best reranking)", responses=ERROR_RESPONSES)
async def score(
    body: ScoreBody, registry: RegistryDep, settings: SettingsDep, metrics: MetricsDep
) -> ScoreResponse:
    plan = plan_scoring(body, registry, settings)
    scored = await run_plan(plan)
    for runner, ranking in zip(plan.runners, scored.rankings, strict=True):
        metrics.tokens_scored.labels(runner.name).inc(ranking.tokens_scored)
    results = [
        CandidateResult(
            text=r.text,
            logprob=r.logprob,
            num_tokens=r.num_tokens,
            oov=r.oov,
            oov_logprob=r.oov_logprob,
            perplexity=r.perplexity,
            score=r.score,
            rank=r.rank,
            length=r.length,
            hotword_bonus=r.hotword_bonus,
            lm=scored.lm[i] if scored.lm is not None else None,
            token_logprobs=[
                TokenLogprob(token=t, logprob=lp) for t, lp in zip(r.tokens, r.token_logprobs, strict=True)
            ]
            if body.per_token
            else None,
        )
        for i, r in enumerate(scored.results)
    ]
    sweep = (
        [SweepResult.model_validate(s, from_attributes=True) for s in scored.sweep]
        if scored.sweep is not None
        else None
    )
    return ScoreResponse(model=plan.model_names, results=results, ranking=scored.ranking, sweep=sweep)
