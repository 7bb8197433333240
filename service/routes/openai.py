"""OpenAI's completions API on the engine the native routes use: POST /v1/completions, GET /v1/models.

A completion is the samples POST /generate gives for the same prompt, parameters and seed, and its
echoed log-probs are the numbers POST /score gives (service/completions.py). Streamed, it is
OpenAI's server-sent events::

    data: {"id": "cmpl-…", "object": "text_completion", "choices": [{"index": 0, "text": "天", …}], …}
    data: {…}                  (one chunk per generated token of each choice; echo: the prompt first)
    data: {…, "choices": [], "usage": {…}}        (with stream_options.include_usage)
    data: [DONE]

A request is planned, run and answered (service/completions.py): its whole cost is counted before
any work, its generations run in turns of at most RNNLM_MAX_REQUEST_ROWS samples, and its answer is
bounded (RNNLM_MAX_LOGPROB_ENTRIES, RNNLM_MAX_ANSWER_BYTES) and serialized off the event loop.

These routes follow OpenAI's API reference, not this service's OpenAPI schema: /docs does not list
them, docs/API.md says what is supported. Their errors are in OpenAI's shape (openai_errors.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Response
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from model.inference.engine.decode import ShownTokenEvent
from model.models.positions import Alternatives, PositionAlternatives
from model.text.tokenizer import EOS_ID, Tokenizer

from ..compat_schemas import (
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionResponse,
    CompletionUsage,
    ModelCard,
    ModelList,
    PromptInput,
)
from ..completions import (
    Completion,
    Prompt,
    Turns,
    answer,
    complete,
    completion_cost,
    completion_json,
    echo_scores,
    finish_reason,
    generated_logprobs,
    prompt_logprobs,
    read_prompts,
    refuse_by_cost,
    refuse_by_size,
    turn_window,
)
from ..context import current_request_id
from ..deps import MetricsDep, OffLoopBodyRoute, RegistryDep, SettingsDep, within_limits
from ..limits import release_freed_memory
from ..metrics import ServiceMetrics
from ..openai_errors import openai_error
from ..rescoring import refuse_backward
from ..runner import ModelRunner
from ..settings import Settings
from ..streaming import StallBoundedEventSource, check_stop_size

log = logging.getLogger("rnnlm.service")
# model work: admitted, guarded and limited like /generate; a large body is parsed off the event loop
router = APIRouter(tags=["openai"], route_class=OffLoopBodyRoute)
info_router = APIRouter(tags=["openai"])  # reads, like /models
STARTED = int(time.time())  # the `created` of every served model: when this server loaded it
LARGE_PROMPT_CHARS = 4_096  # prompts this long together are tokenized in a worker thread
TRIM_AFTER_ANSWER_BYTES = 1_000_000  # an answer this large (estimated) hands its freed memory back

CompletionBody = Annotated[CompletionRequest, Depends(within_limits(CompletionRequest))]


@router.post("/v1/completions", include_in_schema=False)
async def completions(
    body: CompletionBody, registry: RegistryDep, settings: SettingsDep, metrics: MetricsDep
) -> Response:
    """Plan, run, answer: the prompts and the whole cost first (413 / 503 before any work), then the
    echo's pass, then the generations in turns; the answer is built and serialized in a thread."""
    runner = registry.get(body.model)
    # a completion continues its prompt, and even max_tokens 0 scores it as an open prefix (echo)
    refuse_backward(runner, "continue or score a prompt as a prefix (POST /score scores whole sentences)")
    check_stop_size(list(body.stop), settings.max_stop_bytes)
    prompts = await read_all(runner, body.prompt, settings)
    max_tokens = settings.max_new_tokens if body.max_tokens is None else body.max_tokens
    cost = completion_cost(body, prompts, max_tokens, runner.max_piece_bytes)
    refuse_by_size(cost, settings)
    refuse_by_cost(runner, cost)
    head = CompletionResponse(
        id=f"cmpl-{current_request_id() or uuid.uuid4().hex}",
        created=int(time.time()),
        model=runner.name,
        choices=[],
    )
    echo = await echo_scores(runner, body, prompts)
    metrics.tokens_scored.labels(runner.name).inc(sum(len(e.token_logprobs) for e in echo or []))
    backlog = settings.stream_backlog if body.stream else None  # streamed: samples pause while unread
    turns = Turns(runner, body, prompts, max_tokens, turn_window(settings, body.n), backlog)
    turns.start()  # the first turn queued now: a full queue is a 503 before the answer starts
    trim = cost.answer_bytes >= TRIM_AFTER_ANSWER_BYTES  # its objects were many times its size
    if body.stream:
        chunks = stream_chunks(runner, body, prompts, echo, turns, head, metrics, trim)
        # a client that reads nothing for RNNLM_STREAM_STALL_S ends the stream (the engine-side stall
        # limit stays off: later prompts' streams legitimately wait while earlier ones are sent)
        return StallBoundedEventSource(
            chunks,
            ping=settings.sse_ping_s,
            stall_s=settings.stream_stall_s or None,
            on_stall=metrics.engine_rejected.labels("generate", "stalled").inc,
        )
    done = await complete(turns, prompts, echo)
    metrics.tokens_generated.labels(runner.name).inc(done.tokens_generated)
    content = await run_in_threadpool(render_completion, runner.lm.tokenizer, body, head, done)
    del done  # the objects it was built from are freed before the answer is sent
    background = BackgroundTask(release_freed_memory) if trim else None  # in a thread, once sent
    return Response(content, media_type="application/json", background=background)


async def read_all(runner: ModelRunner, prompt: PromptInput, settings: Settings) -> list[Prompt]:
    """The request's prompts, tokenized in a worker thread when they are long together."""
    args = (runner.lm.tokenizer, prompt, settings.max_batch_texts, settings.max_text_chars)
    if prompt_chars(prompt) >= LARGE_PROMPT_CHARS:
        return await asyncio.to_thread(read_prompts, *args)
    return read_prompts(*args)


def prompt_chars(prompt: PromptInput) -> int:
    """Characters (or token ids) of a prompt in any of its forms."""
    if isinstance(prompt, str):
        return len(prompt)
    return sum(1 if isinstance(p, int) else len(p) for p in prompt)


def render_completion(
    tokenizer: Tokenizer, body: CompletionRequest, head: CompletionResponse, done: Completion
) -> bytes:
    """The unstreamed answer's JSON (built and serialized in a worker thread)."""
    response = answer(tokenizer, body, head, done)
    return completion_json(response, response.choices).encode()


def chunk(head: CompletionResponse, choice: CompletionChoice) -> dict:
    return {"data": completion_json(head, [choice])}


def echo_chunks(
    tokenizer: Tokenizer,
    body: CompletionRequest,
    head: CompletionResponse,
    prompt: Prompt,
    scored: PositionAlternatives | None,
    index: int,
) -> list[dict]:
    """A prompt's echo, one chunk per choice (built in a worker thread: it may be long)."""
    echoed = prompt_logprobs(tokenizer, prompt, scored) if scored is not None else None
    return [
        chunk(head, CompletionChoice(index=index + j, text=prompt.text, logprobs=echoed, finish_reason=None))
        for j in range(body.n)
    ]


async def stream_chunks(
    runner: ModelRunner,
    body: CompletionRequest,
    prompts: list[Prompt],
    echo: list[PositionAlternatives] | None,
    turns: Turns,
    head: CompletionResponse,
    metrics: ServiceMetrics,
    trim: bool = False,
) -> AsyncIterator[dict]:
    """The prompts one after the other (the next turns generate meanwhile), each choice's echo
    first, then one chunk per token; ``[DONE]`` last (``trim``: then hand freed memory back)."""
    tok = runner.lm.tokenizer
    generated = metrics.tokens_generated.labels(runner.name)
    prompt_tokens = completion_tokens = 0
    try:
        async with turns:  # leaving early (client gone) cancels every generation
            for pi, prompt in enumerate(prompts):
                prompt_tokens += prompt.num_tokens
                index = pi * body.n
                if body.echo:
                    scored = echo[pi] if echo is not None else None
                    for item in await asyncio.to_thread(echo_chunks, tok, body, head, prompt, scored, index):
                        yield item
                stream = await turns.stream(pi)
                if stream is None:  # max_tokens 0: nothing to generate
                    for j in range(body.n):
                        yield chunk(head, CompletionChoice(index=index + j, text="", finish_reason="length"))
                    continue
                texts = [""] * body.n  # each choice's text so far (before a stop string is cut)
                started = [False] * body.n  # whether a choice has shown any text yet
                async for ev in stream:
                    assert isinstance(ev, ShownTokenEvent), "the engine's events carry the text safe to show"
                    generated.inc()
                    completion_tokens += 1
                    texts[ev.sample] = tok.append_piece(texts[ev.sample], ev.text)
                    delta = ev.shown
                    if body.echo and delta and not started[ev.sample]:  # the joiner after the prompt, if any
                        delta = tok.append_piece(prompt.text, delta)[len(prompt.text) :]
                    started[ev.sample] = started[ev.sample] or bool(delta)
                    logprobs = None
                    if body.logprobs is not None:
                        logprobs = token_chunk_logprobs(
                            tok, body, prompt, ev.token_id, ev.logprob, ev.alternatives, texts[ev.sample]
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
    if trim:
        await asyncio.to_thread(release_freed_memory)


def token_chunk_logprobs(
    tok: Tokenizer,
    body: CompletionRequest,
    prompt: Prompt,
    token_id: int,
    logprob: float,
    alternatives: Alternatives,
    completion: str,
) -> CompletionLogprobs:
    """The log-probs of a sample's newest token (its alternatives came with it from the decoding
    step); ``completion`` is its text so far (before any stop string is cut), in which the
    token's offset is counted (after the echoed prompt)."""
    base = len(tok.append_piece(prompt.text, completion)) - len(completion) if body.echo else 0
    piece = "" if token_id == EOS_ID else tok.piece(token_id)
    start = base + len(completion) - len(piece)
    return generated_logprobs(tok, [token_id], [logprob], [alternatives], [start])


@info_router.get("/v1/models", include_in_schema=False)
async def list_models(registry: RegistryDep) -> ModelList:
    """The served models, the default first."""
    return ModelList(data=[model_card(runner) for runner in registry.runners.values()])


@info_router.get("/v1/models/{model}", include_in_schema=False)
async def retrieve_model(model: str, registry: RegistryDep) -> ModelCard:
    return model_card(registry.get(model))


def model_card(runner: ModelRunner) -> ModelCard:
    tokenizer = runner.lm.tokenizer
    return ModelCard(id=runner.name, created=STARTED, language=tokenizer.language, tokenizer=tokenizer.kind)
