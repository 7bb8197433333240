"""POST /score: log-probs of candidates, combined with external scores and ranked (n-best reranking).

The route translates HTTP to :mod:`service.rescoring` (which models score, with what weights) and
:func:`model.inference.scoring.score_candidates` (through each model's runner), and back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from fastapi import APIRouter

from model.inference.scoring import candidate_tokens

from ..deps import MetricsDep, OffLoopBodyRoute, RegistryDep, ScoreBody, SettingsDep, body_worker
from ..errors import ERROR_RESPONSES
from ..rescoring import ScoringPlan, plan_scoring, run_plan
from ..schemas import CandidateResult, ScoreResponse, SweepResult, TokenLogprob

router = APIRouter(tags=["model"], route_class=OffLoopBodyRoute)
LARGE_TEXT_CHARS = 32_768  # candidates this long together are counted in the body worker


async def refuse_by_cost(plan: ScoringPlan, candidates: Sequence[str]) -> None:
    """413 (past RNNLM_MAX_REQUEST_TOKENS) or 503 (the tokens in flight are full) before any text
    is tokenized: a refused megabyte costs a count of its pieces, not the tokenizing and the id
    checks that the engine's own admission would come after. Long lists are counted off the loop."""
    large = sum(map(len, candidates)) >= LARGE_TEXT_CHARS
    loop = asyncio.get_running_loop()
    for runner in plan.runners:
        args = (runner.lm.tokenizer, candidates, plan.options)
        if large:
            tokens = await loop.run_in_executor(body_worker(), candidate_tokens, *args)
        else:
            tokens = candidate_tokens(*args)
        runner.refuse_score_by_cost(tokens)


@router.post("/score", summary="Score and rank candidates (n-best reranking)", responses=ERROR_RESPONSES)
async def score(
    body: ScoreBody, registry: RegistryDep, settings: SettingsDep, metrics: MetricsDep
) -> ScoreResponse:
    plan = plan_scoring(body, registry, settings)
    await refuse_by_cost(plan, body.candidates)
    pairs = [(p.lm_weight, p.length_bonus) for p in body.sweep] if body.sweep is not None else None
    scored = await run_plan(plan, body.candidates, body.external_scores, pairs)
    for runner, ranking in zip(plan.runners, scored.rankings, strict=True):
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
