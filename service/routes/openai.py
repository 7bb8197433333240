"""OpenAI's completions API on the engine the native routes use: POST /v1/completions, GET /v1/models.

A completion is the samples POST /generate gives for the same prompt, parameters and seed, and its
echoed log-probs are the numbers POST /score gives (service/completions.py). Streamed, it is
OpenAI's server-sent events::

    data: {"id": "cmpl-…", "object": "text_completion", "choices": [{"index": 0, "text": "天", …}], …}
    data: {…}                  (one chunk per generated token of each choice; echo: the prompt first)
    data: {…, "choices": [], "usage": {…}}        (with stream_options.include_usage)
    data: [DONE]

These routes follow OpenAI's API reference, not this service's OpenAPI schema: /docs does not list
them, docs/API.md says what is supported. Their errors are in OpenAI's shape (openai_errors.py).
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends

from model.engine import GenerationStream
from model.generation import Sample, add_event, new_samples
from model.sampling import StoppingCriteria
from model.tokenizer import EOS_ID

from ..compat_schemas import (
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionResponse,
    CompletionUsage,
    ModelCard,
    ModelList,
)
from ..completions import (
    Prompt,
    begin_all,
    complete,
    echo_logprobs,
    echo_positions,
    finish_reason,
    generated_logprobs,
    prompt_logprobs,
    read_prompts,
    top_alternatives,
)
from ..context import current_request_id
from ..deps import MetricsDep, RegistryDep, SettingsDep, within_limits
from ..metrics import ServiceMetrics
from ..openai_errors import openai_error
from ..rescoring import refuse_backward
from ..runner import ModelRunner
from ..streaming import StallBoundedEventSource, StreamedText, check_stop_size

log = logging.getLogger("rnnlm.service")
router = APIRouter(tags=["openai"])  # model work: admitted, guarded and limited like /generate
info_router = APIRouter(tags=["openai"])  # reads, like /models
STARTED = int(time.time())  # the `created` of every served model: when this server loaded it

CompletionBody = Annotated[CompletionRequest, Depends(within_limits(CompletionRequest))]


@router.post("/v1/completions", include_in_schema=False)
async def completions(
    body: CompletionBody, registry: RegistryDep, settings: SettingsDep, metrics: MetricsDep
) -> CompletionResponse:
    runner = registry.get(body.model)
    prompts = read_prompts(
        runner.lm.tokenizer, body.prompt, settings.max_batch_texts, settings.max_text_chars
    )
    max_tokens = settings.max_new_tokens if body.max_tokens is None else body.max_tokens
    # a completion continues its prompt, and even max_tokens 0 scores it as an open prefix (echo)
    refuse_backward(runner, "continue or score a prompt as a prefix (POST /score scores whole sentences)")
    check_stop_size(list(body.stop), settings.max_stop_bytes)
    head = CompletionResponse(
        id=f"cmpl-{current_request_id() or uuid.uuid4().hex}",
        created=int(time.time()),
        model=runner.name,
        choices=[],
    )
    if body.stream:
        # Queued now, so that a full queue is a 503 before the stream starts.
        streams = begin_all(runner, body, prompts, max_tokens)
        for stream in streams:  # backpressure: a prompt's samples pause while their events wait
            if stream is not None:
                stream.max_backlog = settings.stream_backlog
        chunks = stream_chunks(runner, body, prompts, streams, head, metrics)
        # a client that reads nothing for RNNLM_STREAM_STALL_S ends the stream (the engine-side stall
        # limit stays off: later prompts' streams legitimately wait while earlier ones are sent)
        return StallBoundedEventSource(  # type: ignore[return-value]
            chunks,
            ping=settings.sse_ping_s,
            stall_s=settings.stream_stall_s or None,
            on_stall=metrics.engine_rejected.labels("generate", "stalled").inc,
        )
    done = await complete(runner, body, prompts, max_tokens)
    metrics.tokens_scored.labels(runner.name).inc(done.tokens_scored)
    metrics.tokens_generated.labels(runner.name).inc(done.usage.completion_tokens)
    return head.model_copy(update={"choices": done.choices, "usage": done.usage})


def chunk(head: CompletionResponse, choice: CompletionChoice) -> dict:
    return {"data": head.model_copy(update={"choices": [choice]}).model_dump_json()}


async def stream_chunks(
    runner: ModelRunner,
    body: CompletionRequest,
    prompts: list[Prompt],
    streams: list[GenerationStream | None],
    head: CompletionResponse,
    metrics: ServiceMetrics,
) -> AsyncIterator[dict]:
    """The prompts one after the other (their generations run together in the engine meanwhile),
    each choice's echo first, then one chunk per token; ``[DONE]`` last."""
    tok = runner.lm.tokenizer
    generated = metrics.tokens_generated.labels(runner.name)
    prompt_tokens = completion_tokens = 0
    try:
        async with contextlib.AsyncExitStack() as stack:  # leaving early (client gone) cancels them all
            for stream in streams:
                if stream is not None:
                    await stack.enter_async_context(stream)
            for pi, (prompt, stream) in enumerate(zip(prompts, streams, strict=True)):
                prompt_tokens += prompt.num_tokens
                index = pi * body.n
                if body.echo:
                    echoed = await echo_chunk_logprobs(runner, body, prompt, metrics)
                    for j in range(body.n):
                        choice = CompletionChoice(
                            index=index + j, text=prompt.text, logprobs=echoed, finish_reason=None
                        )
                        yield chunk(head, choice)
                if stream is None:  # max_tokens 0: nothing to generate
                    for j in range(body.n):
                        yield chunk(head, CompletionChoice(index=index + j, text="", finish_reason="length"))
                    continue
                texts = [StreamedText(stop=list(body.stop), joiner=tok.joiner) for _ in range(body.n)]
                samples = new_samples(stream.request)  # collected as GenerationStream.collect does
                stopping = StoppingCriteria(stream.request.max_new_tokens, stream.request.stop)
                async for ev in stream:
                    add_event(samples, ev, tok, stopping)
                    generated.inc()
                    completion_tokens += 1
                    shown = texts[ev.sample]
                    first = shown.shown == 0
                    delta = shown.push(ev.text, ev.finish_reason)
                    if body.echo and delta and first:  # the joiner between prompt and completion, if any
                        delta = tok.append_piece(prompt.text, delta)[len(prompt.text) :]
                    logprobs = None
                    if body.logprobs is not None:
                        logprobs = await token_chunk_logprobs(
                            runner, body, prompt, samples[ev.sample], shown.text
                        )
                    reason = finish_reason(ev.finish_reason) if ev.finish_reason is not None else None
                    choice = CompletionChoice(
                        index=index + ev.sample, text=delta, logprobs=logprobs, finish_reason=reason
                    )
                    yield chunk(head, choice)
        if body.stream_options is not None and body.stream_options.include_usage:
            usage = CompletionUsage(
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                total_tokens=prompt_tokens + completion_tokens,
            )
            yield {"data": head.model_copy(update={"usage": usage}).model_dump_json()}
    except Exception:  # the response has started: report in-band, never a traceback
        log.exception("completion stream failed")
        message = "generation failed; the server log has the details"
        yield {
            "data": json.dumps(openai_error(500, "internal_error", message, request_id=current_request_id()))
        }
    yield {"data": "[DONE]"}


async def echo_chunk_logprobs(
    runner: ModelRunner, body: CompletionRequest, prompt: Prompt, metrics: ServiceMetrics
) -> CompletionLogprobs | None:
    """The echoed prompt's log-probs (as in an unstreamed completion), when asked for."""
    if body.logprobs is None:
        return None
    logprobs, scored = await echo_logprobs(runner, prompt)
    metrics.tokens_scored.labels(runner.name).inc(scored)
    positions = echo_positions(prompt)
    alternatives = await top_alternatives(runner.engine, positions, body.logprobs) if body.logprobs else []
    return prompt_logprobs(runner.lm.tokenizer, prompt, logprobs, iter(alternatives or [[]] * len(positions)))


async def token_chunk_logprobs(
    runner: ModelRunner, body: CompletionRequest, prompt: Prompt, sample: Sample, completion: str
) -> CompletionLogprobs:
    """The log-probs of a sample's newest token; ``completion`` is its text so far (before any
    stop string is cut), in which the token's offset is counted (after the echoed prompt)."""
    tok = runner.lm.tokenizer
    token_id, logprob = sample.ids[-1], sample.logprobs[-1]
    seq = [*prompt.ids_read, *sample.ids]
    k = body.logprobs or 0
    alternatives = await top_alternatives(runner.engine, [(seq, len(seq) - 1)], k) if k else [[]]
    base = len(tok.append_piece(prompt.text, completion)) - len(completion) if body.echo else 0
    piece = "" if token_id == EOS_ID else tok.piece(token_id)
    start = base + len(completion) - len(piece)
    return generated_logprobs(tok, [token_id], [logprob], iter(alternatives), [start])


@info_router.get("/v1/models", include_in_schema=False)
async def list_models(registry: RegistryDep) -> ModelList:
    """The served models, the default first."""
    return ModelList(data=[ModelCard(id=name, created=STARTED) for name in registry.runners])


@info_router.get("/v1/models/{model}", include_in_schema=False)
async def retrieve_model(model: str, registry: RegistryDep) -> ModelCard:
    return ModelCard(id=registry.get(model).name, created=STARTED)
