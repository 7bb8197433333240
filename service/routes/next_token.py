"""POST /next-token: the model's most likely next tokens after a text (or a batch of texts)."""

from __future__ import annotations

from fastapi import APIRouter

from ..deps import NextTokenBody, RegistryDep
from ..errors import ERROR_RESPONSES
from ..schemas import NextTokenBatchResponse, NextTokenResponse, NextTokenResult

router = APIRouter(tags=["model"])


@router.post(
    "/next-token",
    summary="Top-k next tokens with their probabilities and the entropy",
    responses=ERROR_RESPONSES,
)
async def next_token(
    body: NextTokenBody, registry: RegistryDep
) -> NextTokenResponse | NextTokenBatchResponse:
    runner = registry.get(body.model)
    texts = body.text if isinstance(body.text, list) else [body.text]
    found = await runner.next_token(texts, body.top_k)
    results = [NextTokenResult.model_validate(r, from_attributes=True) for r in found]
    if isinstance(body.text, list):
        return NextTokenBatchResponse(model=runner.name, results=results)
    return NextTokenResponse(model=runner.name, **results[0].model_dump())
