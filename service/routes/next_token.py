"""POST /next-token: the model's most likely next tokens after a text (or a batch of texts).

The answer grows with texts × top_k, so that product is bounded (RNNLM_MAX_NEXT_TOKEN_ENTRIES,
413 naming ``top_k``), and the answer is built and serialized in a worker thread: a large one
never holds up the event loop (and /health with it).

Every answer carries a ``Server-Timing`` header (milliseconds; browsers' developer tools show it,
``rnnlm.bench.http`` prints it), stage after stage from the moment the request reached the app:

    validation  middleware, body, JSON parsing, pydantic validation, admission, answer-size check
    tokenize    the texts to ids                     ┐
    queue       waiting for the engine's worker      │
    model       the network's pass (the batch's)     │ model/inference/engine/text.py
    topk        top-k and entropy                    │
    handoff     the answer's way back to the loop    │
    describe    ids to text, probabilities           ┘
    serialize   the response's JSON (in a worker thread)
    total       all of the above (the time outside it is HTTP: the socket, uvicorn, the client)
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from model.inference.scoring import NextToken

from ..deps import NextTokenBody, RegistryDep, SettingsDep
from ..errors import ERROR_RESPONSES, too_large
from ..limits import env_name
from ..rescoring import refuse_backward
from ..schemas import NextTokenBatchResponse, NextTokenResponse, NextTokenResult

router = APIRouter(tags=["model"])


@router.post(
    "/next-token",
    summary="Top-k next tokens with their probabilities and the entropy",
    responses=ERROR_RESPONSES,
    response_model=NextTokenResponse | NextTokenBatchResponse,
)
async def next_token(
    body: NextTokenBody, registry: RegistryDep, settings: SettingsDep, request: Request
) -> Response:
    runner = registry.get(body.model)
    refuse_backward(runner, "predict the token after a text")
    texts = body.text if isinstance(body.text, list) else [body.text]
    check_answer_size(len(texts), body.top_k, settings.max_next_token_entries)
    validated = time.perf_counter()
    stages: dict[str, float] = {}
    found = await runner.next_token(texts, body.top_k, stages)
    found_at = time.perf_counter()
    content = await run_in_threadpool(render, runner.name, found, isinstance(body.text, list))
    done = time.perf_counter()
    received = getattr(request.state, "received_at", validated)  # set by MetricsMiddleware
    stages = {
        "validation": validated - received,
        **stages,
        "serialize": done - found_at,
        "total": done - received,
    }
    return Response(content, media_type="application/json", headers={"Server-Timing": server_timing(stages)})


def server_timing(stages: dict[str, float]) -> str:
    """A Server-Timing header value: ``name;dur=<ms>`` for each stage, in order."""
    return ", ".join(f"{name};dur={1e3 * seconds:.3f}" for name, seconds in stages.items())


def check_answer_size(texts: int, top_k: int, limit: int) -> None:
    """413 naming ``top_k`` when texts × top_k next tokens are more than one answer may hold."""
    if texts * top_k > limit:
        raise too_large(
            "top_k",
            f"{texts} texts × top_k {top_k} = {texts * top_k} next tokens is more than the limit of {limit} "
            f"per request ({env_name('max_next_token_entries')}); ask fewer texts or a smaller top_k",
        )


def render(model: str, found: list[NextToken], batch: bool) -> bytes:
    """The response body: the batch form for a list of texts, the flat form for one text."""
    results = [NextTokenResult.model_validate(r, from_attributes=True) for r in found]
    if batch:
        return NextTokenBatchResponse(model=model, results=results).model_dump_json().encode()
    return NextTokenResponse(model=model, **results[0].model_dump()).model_dump_json().encode()
