"""POST /embed: each text's vector from a served recurrent model (the seeds' text classification input).

::

    {"texts": [...], "pooling": "last" | "mean", "normalize": bool, "model": ...}
        ─▶ ModelRunner.embed ─▶ engine worker: lm.embed (model/models/lm.py defines the poolings)
        ─▶ {"model", "dim", "pooling", "embeddings": [[...], ...], "tokens": [n per text]}

Bounds as /next-token's texts: at most RNNLM_MAX_BATCH_TEXTS texts and RNNLM_MAX_TEXT_CHARS
characters each (413 naming ``texts`` / ``texts.i``), their tokens with a ``<bos>`` each at most
RNNLM_MAX_REQUEST_TOKENS (413 naming ``texts``); an empty list is a 422. A model kind without
hidden states (n-gram, window, mixture) is a 422 naming ``model``. A backward model is allowed:
its vector is the state after reading the text right to left. The answer (texts × dim numbers)
is serialized in a worker thread, so a large one never holds up the event loop.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response
from starlette.concurrency import run_in_threadpool

from model.inference.embedding import Embeddings

from ..deps import MetricsDep, OffLoopBodyRoute, RegistryDep, within_limits
from ..errors import ERROR_RESPONSES
from ..schemas import EmbedRequest, EmbedResponse

router = APIRouter(tags=["model"], route_class=OffLoopBodyRoute)
EmbedBody = Annotated[EmbedRequest, Depends(within_limits(EmbedRequest))]


@router.post(
    "/embed",
    summary="Each text's vector from the model's hidden states (pooling last or mean)",
    responses=ERROR_RESPONSES,
    response_model=EmbedResponse,
)
async def embed(body: EmbedBody, registry: RegistryDep, metrics: MetricsDep) -> Response:
    runner = registry.get(body.model)
    found = await runner.embed(body.texts, body.pooling, body.normalize)
    metrics.tokens_embedded.labels(runner.name).inc(sum(found.tokens))
    content = await run_in_threadpool(render, runner.name, found)
    return Response(content, media_type="application/json")


def render(model: str, found: Embeddings) -> bytes:
    """The response body (JSON), built off the event loop."""
    answer = EmbedResponse(
        model=model,
        dim=found.dim,
        pooling=found.pooling,  # type: ignore[arg-type]  # "last" | "mean", checked by the library
        embeddings=found.vectors.tolist(),
        tokens=found.tokens,
    )
    return answer.model_dump_json().encode()
