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

from model.inference.generation import Sample, TokenEvent, add_event, new_samples
from model.inference.sampling import StoppingCriteria
from model.text.tokenizer import Tokenizer

from ..deps import GenerateBody, MetricsDep, RegistryDep, SettingsDep
from ..errors import ERROR_RESPONSES, ErrorDetail, ErrorResponse
from ..metrics import ServiceMetrics
from ..rescoring import refuse_backward
from ..runner import Generation, ModelRunner, ShownTokenEvent, StreamStalled, generation_request
from ..schemas import (
    FinishReason,
    GeneratedSample,
    GenerateRequest,
    GenerateResponse,
    TokenEventData,
    TokenLogprob,
)
from ..streaming import StallBoundedEventSource, check_stop_size

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
    body: GenerateBody, registry: RegistryDep, settings: SettingsDep, metrics: MetricsDep
) -> GenerateResponse:
    runner = registry.get(body.model)
    refuse_backward(runner, "continue a prompt")
    check_stop_size(body.stop, settings.max_stop_bytes)
    # the engine tokenizes the prompt once; the request's seed is decided here (given or drawn)
    stream = runner.begin(generation_request(body, body.prompt, body.max_new_tokens))
    seed, prompt_tokens = stream.seed, len(stream.prompt_ids)
    if body.stream:
        # backpressure: a client that stops reading pauses its generation, and ends it when stalled
        stream.max_backlog = settings.stream_backlog
        stream.stall_s = settings.stream_stall_s or None
        events = stream_events(runner, stream, body, prompt_tokens, metrics)
        stalled = metrics.engine_rejected.labels("generate", "stalled")

        def on_stall() -> None:  # counted once: by the engine if it ended the stream first
            if not stream.stalled_out:
                stalled.inc()

        return StallBoundedEventSource(  # type: ignore[return-value]
            events, ping=settings.sse_ping_s, stall_s=stream.stall_s, on_stall=on_stall
        )
    samples = await stream.collect()
    metrics.tokens_generated.labels(runner.name).inc(sum(len(s.ids) for s in samples))
    return _response(runner, _samples_out(runner, samples, body), seed, prompt_tokens)


def _samples_out(runner: ModelRunner, samples: list[Sample], body: GenerateRequest) -> list[GeneratedSample]:
    return [
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
    stream: Generation,
    body: GenerateRequest,
    prompt_tokens: int,
    metrics: ServiceMetrics,
) -> AsyncIterator[dict]:
    """``token`` events as the runner produces them, then ``done`` (or ``error``)."""
    tok = runner.lm.tokenizer
    samples = new_samples(stream.request)  # collected as GenerationStream.collect does
    stopping = StoppingCriteria(stream.request.max_new_tokens, stream.request.stop)
    generated = metrics.tokens_generated.labels(runner.name)
    try:
        async with stream:
            async for ev in stream:
                add_event(samples, ev, tok, stopping)
                generated.inc()
                yield {"event": "token", "data": token_event(ev, samples, tok).model_dump_json()}
        out = _samples_out(runner, samples, body)
        yield {"event": "done", "data": _response(runner, out, stream.seed, prompt_tokens).model_dump_json()}
    except StreamStalled:  # its client read nothing for RNNLM_STREAM_STALL_S (the engine logged it)
        return
    except Exception:  # the response has started: report in-band, never a traceback
        log.exception("generation stream failed")
        error = ErrorResponse(
            error=ErrorDetail(
                type="internal_error", status=500, message="generation failed; the server log has the details"
            )
        )
        yield {"event": "error", "data": json.dumps(error.model_dump())}


def token_event(ev: TokenEvent, samples: list[Sample], tok: Tokenizer) -> TokenEventData:
    """One ``token`` event: the token, and the text now safe to show (held back near a stop
    string; the engine's worker works it out, see model.inference.engine.decode)."""
    assert isinstance(ev, ShownTokenEvent), "the engine's events carry the text safe to show"
    delta = ev.shown
    return TokenEventData(
        sample=ev.sample,
        index=len(samples[ev.sample].ids) - 1,
        id=ev.token_id,
        token=tok.piece(ev.token_id),
        logprob=ev.logprob,
        text=delta,
        finish_reason=_finish_reason(ev.finish_reason) if ev.finish_reason is not None else None,
    )
