"""POST /generate: continue a prompt, as one JSON body or as server-sent events.

Streamed, the answer is::

    event: token   data: {"sample": 0, "index": 0, "id": 17, "token": "天", "text": "天", ...}
    event: token   data: {...}                                   (one per generated token, every sample)
    event: done    data: {the same body as a non-streamed response}

and, should something fail after the stream has started, ``event: error`` with the error shape.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import cast

from fastapi import APIRouter
from sse_starlette import EventSourceResponse

from model.generation import GenerationRequest
from model.sampling import SamplingParams, draw_seed

from ..deps import MetricsDep, RegistryDep, SettingsDep
from ..errors import ERROR_RESPONSES, ErrorDetail, ErrorResponse
from ..limits import check_limits
from ..metrics import ServiceMetrics
from ..runner import ModelRunner
from ..schemas import (
    FinishReason,
    GeneratedSample,
    GenerateRequest,
    GenerateResponse,
    TokenEventData,
    TokenLogprob,
)
from ..streaming import StreamedText

log = logging.getLogger("rnnlm.service")
router = APIRouter(tags=["model"])

SSE_EVENT = {
    "type": "object",
    "required": ["event", "data"],
    "properties": {  # one server-sent event
        "event": {"type": "string", "enum": ["token", "done", "error"]},
        "data": {
            "type": "string",
            "description": "JSON: TokenEventData (token), GenerateResponse (done), ErrorResponse (error)",
        },
    },
}
STREAM_DOC = {
    "content": {
        "text/event-stream": {
            "schema": SSE_EVENT,
            "example": (
                'event: token\ndata: {"sample": 0, "index": 0, "id": 17, "token": "天", "logprob": -1.2, '
                '"text": "天", "finish_reason": null}\n\nevent: done\ndata: {"model": "...", "text": "天气", ...}\n\n'
            ),
        }
    },
    "description": "with stream: true, server-sent events (token events, then done)",
}


@router.post(
    "/generate",
    summary="Continue a prompt (optionally streamed as server-sent events)",
    responses={**ERROR_RESPONSES, 200: STREAM_DOC},
)
async def generate(
    body: GenerateRequest, registry: RegistryDep, settings: SettingsDep, metrics: MetricsDep
) -> GenerateResponse:
    check_limits(body, settings)
    runner = registry.get(body.model)
    seed = body.seed if body.seed is not None else draw_seed()
    gen = GenerationRequest(
        prompt=body.prompt,
        max_new_tokens=body.max_new_tokens,
        stop=list(body.stop),
        n=body.n,
        sampling=SamplingParams(
            temperature=body.temperature,
            top_k=body.top_k,
            top_p=body.top_p,
            repetition_penalty=body.repetition_penalty,
            seed=seed,
        ),
    )
    prompt_tokens = len(runner.lm.tokenizer.encode(body.prompt).ids)
    if body.stream:
        events = stream_events(runner, gen, body, seed, prompt_tokens, metrics)
        return EventSourceResponse(events, ping=settings.sse_ping_s)  # type: ignore[return-value]
    samples = await runner.generate(gen)
    metrics.tokens_generated.labels(runner.name).inc(sum(len(s.ids) for s in samples))
    out = [
        GeneratedSample(
            index=i,
            text=s.text,
            finish_reason=_finish_reason(s.finish_reason),
            num_tokens=len(s.ids),
            seed=s.seed,
            logprobs=_logprobs(runner, s.ids, s.logprobs, body),
        )
        for i, s in enumerate(samples)
    ]
    return _response(runner, out, seed, prompt_tokens)


def _finish_reason(reason: str | None) -> FinishReason:
    """A sample's finish reason, typed ``str | None`` by the model, as the response's literal.

    The model gives one of the three; pydantic still checks the value when the response is built.
    """
    return cast(FinishReason, reason)


def _logprobs(
    runner: ModelRunner, ids: list[int], logprobs: list[float], body: GenerateRequest
) -> list[TokenLogprob] | None:
    if not body.return_logprobs:
        return None
    return [
        TokenLogprob(token=runner.lm.tokenizer.piece(i), logprob=lp)
        for i, lp in zip(ids, logprobs, strict=True)
    ]


def _response(
    runner: ModelRunner, samples: list[GeneratedSample], seed: int, prompt_tokens: int
) -> GenerateResponse:
    first = samples[0]
    return GenerateResponse(
        model=runner.name,
        text=first.text,
        finish_reason=first.finish_reason,
        num_tokens=first.num_tokens,
        seed=seed,
        logprobs=first.logprobs,
        prompt_tokens=prompt_tokens,
        samples=samples,
    )


async def stream_events(
    runner: ModelRunner,
    gen: GenerationRequest,
    body: GenerateRequest,
    seed: int,
    prompt_tokens: int,
    metrics: ServiceMetrics,
) -> AsyncIterator[dict]:
    """``token`` events as the runner produces them, then ``done`` (or ``error``)."""
    tok = runner.lm.tokenizer
    texts = [StreamedText(stop=list(body.stop), joiner=tok.joiner) for _ in range(body.n)]
    ids: list[list[int]] = [[] for _ in range(body.n)]
    lps: list[list[float]] = [[] for _ in range(body.n)]
    reasons: list[str | None] = [None] * body.n
    generated = metrics.tokens_generated.labels(runner.name)
    try:
        async for ev in runner.generate_stream(gen):
            ids[ev.sample].append(ev.token_id)
            lps[ev.sample].append(ev.logprob)
            reasons[ev.sample] = ev.finish_reason or reasons[ev.sample]
            generated.inc()
            delta = texts[ev.sample].push(ev.text, ev.finish_reason)
            data = TokenEventData(
                sample=ev.sample,
                index=len(ids[ev.sample]) - 1,
                id=ev.token_id,
                token=tok.piece(ev.token_id),
                logprob=ev.logprob,
                text=delta,
                finish_reason=_finish_reason(ev.finish_reason) if ev.finish_reason is not None else None,
            )
            yield {"event": "token", "data": data.model_dump_json()}
        samples = [
            GeneratedSample(
                index=i,
                text=texts[i].final or "",
                finish_reason=_finish_reason(reasons[i]),
                num_tokens=len(ids[i]),
                seed=seed + i,
                logprobs=_logprobs(runner, ids[i], lps[i], body),
            )
            for i in range(body.n)
        ]
        yield {"event": "done", "data": _response(runner, samples, seed, prompt_tokens).model_dump_json()}
    except Exception:  # the response has started: report in-band, never a traceback
        log.exception("generation stream failed")
        error = ErrorResponse(
            error=ErrorDetail(
                type="internal_error", status=500, message="generation failed; the server log has the details"
            )
        )
        yield {"event": "error", "data": json.dumps(error.model_dump())}
