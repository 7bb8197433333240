"""POST /next-token: the model's most likely next tokens after a text (or a batch of texts).

The answer grows with texts × top_k, so that product is bounded (RNNLM_MAX_NEXT_TOKEN_ENTRIES,
413 naming ``top_k``), and the answer is built and serialized in a worker thread: a large one
never holds up the event loop (and /health with it).
"""

from __future__ import annotations

from fastapi import APIRouter, Response
from starlette.concurrency import run_in_threadpool

from model.scoring import NextToken

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
async def next_token(body: NextTokenBody, registry: RegistryDep, settings: SettingsDep) -> Response:
    runner = registry.get(body.model)
    refuse_backward(runner, "predict the token after a text")
    texts = body.text if isinstance(body.text, list) else [body.text]
    check_answer_size(len(texts), body.top_k, settings.max_next_token_entries)
    found = await runner.next_token(texts, body.top_k)
    content = await run_in_threadpool(render, runner.name, found, isinstance(body.text, list))
    return Response(content, media_type="application/json")


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
