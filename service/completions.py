"""What a /v1/completions request asks of the engine, what that costs, and OpenAI's log-probs
assembled from what the engine returns.

::

    prompt (text | token ids) ─▶ Prompt: its text, ids and pieces (ids ⇄ text: service/tokens.py)
      ─▶ CompletionCost, before any work: tokens (prompts read, echoed positions, prompts × n ×
         max_tokens to generate) against RNNLM_MAX_REQUEST_TOKENS (413, or 503 while the tokens in
         flight are full), the answer's log-prob entries and size against RNNLM_MAX_LOGPROB_ENTRIES
         and RNNLM_MAX_ANSWER_BYTES (413 naming the part that is too large)
      echo + logprobs ─▶ runner.alternatives(every prompt)    one pass over each prompt: each token's
                                                              log-prob and the top k at its position
      max_tokens > 0  ─▶ runner.begin(GenerationRequest)      in turns (Turns): at most
                                                              RNNLM_MAX_REQUEST_ROWS samples at once;
                                                              each token comes with its top k

Echoed positions: the first prompt token only conditions, so its log-prob is null (as in OpenAI's
API, and as /score with ``bos: false`` leaves it unscored), unless a token-id prompt starts with
the ``<bos>`` id: then ``<bos>`` is the null position and the first text token is scored from it
(/score with ``bos: true``). ``<eos>`` is never scored after a prompt (``eos: false``). A token's
alternatives come from the distribution its own log-prob was read from: the echo's from the same
pass, a generated token's from the decoding step that chose it (under the raw model).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from model.inference.generation import GenerationRequest, Sample
from model.models.positions import Alternatives, PositionAlternatives
from model.text.tokenizer import BOS, BOS_ID, EOS_ID, PAD_ID, Tokenizer

from .compat_schemas import (
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionResponse,
    CompletionUsage,
    OpenAIFinish,
    PromptInput,
)
from .errors import invalid, too_large
from .limits import env_name
from .runner import Generation, ModelRunner, Overloaded, generation_request
from .settings import Settings
from .tokens import ids_to_text, piece_starts

QUEUE_RETRY_S = 0.05  # a later turn that finds the engine's queue full tries again after this long
ENTRY_BYTES = 28  # a log-prob in an answer, beside its token's text: `"…": -12.345678901234567, `
CHOICE_BYTES = 200  # a choice's fields beside its text and log-probs


@dataclass
class Prompt:
    text: str  # the prompt as text (a token-id prompt read back from its ids)
    ids: list[int]  # what the model reads after <bos>
    pieces: list[str]  # each id's text within ``text``
    bos: bool = False  # a token-id prompt that began with the <bos> id

    @property
    def ids_read(self) -> list[int]:
        """The whole sequence the model reads: ``<bos>``, then the prompt."""
        return [BOS_ID, *self.ids]

    @property
    def num_tokens(self) -> int:
        """Echoed tokens: the prompt's, and its <bos> when it gave one."""
        return len(self.ids) + int(self.bos)


# -- prompts ----------------------------------------------------------------------------------------
def read_prompts(tokenizer: Tokenizer, prompt: PromptInput, max_prompts: int, max_ids: int) -> list[Prompt]:
    """Each prompt of a request, whichever of OpenAI's four forms it came in."""
    if isinstance(prompt, str):
        return [text_prompt(tokenizer, prompt)]
    if all(isinstance(x, int) for x in prompt):
        return [id_prompt(tokenizer, cast(list[int], prompt), "prompt", max_ids)]
    if len(prompt) > max_prompts:
        raise too_large(
            "prompt",
            f"{len(prompt)} prompts is more than the limit of {max_prompts} ({env_name('max_batch_texts')})",
        )
    items = cast(list[str | list[int]], prompt)
    return [
        text_prompt(tokenizer, p) if isinstance(p, str) else id_prompt(tokenizer, p, f"prompt.{i}", max_ids)
        for i, p in enumerate(items)
    ]


def text_prompt(tokenizer: Tokenizer, text: str) -> Prompt:
    enc = tokenizer.encode(text)
    return Prompt(text, enc.ids, enc.tokens)


def id_prompt(tokenizer: Tokenizer, ids: Sequence[int], field: str, max_ids: int) -> Prompt:
    """A token-id prompt: text tokens (``<unk>`` included), optionally after one leading ``<bos>``."""
    if len(ids) > max_ids:
        raise too_large(
            field, f"{len(ids)} tokens is more than the limit of {max_ids} ({env_name('max_text_chars')})"
        )
    bos = bool(ids) and ids[0] == BOS_ID
    body = list(ids[1:] if bos else ids)
    for j, token_id in enumerate(body, start=int(bos)):
        if token_id >= tokenizer.vocab_size:
            raise invalid(
                f"{field}.{j}", f"token id {token_id} is outside the vocabulary [0, {tokenizer.vocab_size})"
            )
        if token_id in (PAD_ID, BOS_ID, EOS_ID):
            raise invalid(
                f"{field}.{j}",
                f"token id {token_id} is {tokenizer.piece(token_id)}: a prompt holds text tokens "
                f"(and may start with <bos>, id {BOS_ID})",
            )
    text, pieces = ids_to_text(tokenizer, body)
    if tokenizer.encode(text).ids != body:
        raise invalid(field, "these token ids do not read back as the same ids from their text")
    return Prompt(text, body, pieces, bos)


# -- the cost, counted before any work ----------------------------------------------------------------
@dataclass(frozen=True)
class CompletionCost:
    """What a completion asks for, from its prompts' token counts (see the module's diagram)."""

    prompts: int
    n: int
    max_tokens: int
    read: int  # tokens of the prompts generation reads (each once, <bos> included; its n samples share it)
    echoed: int  # tokens of the prompts the echo scores (echo with logprobs)
    entries: int  # log-probs in the answer: tokens × (1 + logprobs), every choice
    echo_bytes: int  # the answer's echoed text (every choice)
    generated_bytes: int  # the most text its samples may generate
    entry_bytes: int  # its log-prob entries

    @property
    def samples(self) -> int:
        return self.prompts * self.n

    @property
    def generated(self) -> int:
        """The most tokens its samples may generate: prompts × n × max_tokens."""
        return self.samples * self.max_tokens

    @property
    def tokens(self) -> int:
        """What it costs the model, counted as /score's and /next-token's cost is (RNNLM_MAX_REQUEST_TOKENS)."""
        return self.read + self.echoed + self.generated

    @property
    def answer_bytes(self) -> int:
        return self.samples * CHOICE_BYTES + self.echo_bytes + self.generated_bytes + self.entry_bytes


def completion_cost(
    body: CompletionRequest, prompts: Sequence[Prompt], max_tokens: int, piece_bytes: int
) -> CompletionCost:
    """The cost of ``body`` with these prompts; ``piece_bytes``: the longest vocabulary piece, in
    UTF-8 bytes (what one generated token may add to a text)."""
    logprobs = body.logprobs
    scored = body.echo and logprobs is not None
    echoed_tokens = sum(p.num_tokens for p in prompts) if body.echo else 0
    returned = body.n * (echoed_tokens + len(prompts) * max_tokens) if logprobs is not None else 0
    return CompletionCost(
        prompts=len(prompts),
        n=body.n,
        max_tokens=max_tokens,
        read=sum(len(p.ids_read) for p in prompts) if max_tokens > 0 else 0,
        echoed=sum(len(p.ids_read) for p in prompts) if scored else 0,
        entries=returned * (1 + (logprobs or 0)),
        echo_bytes=body.n * sum(len(p.text.encode("utf-8", "surrogatepass")) for p in prompts)
        if body.echo
        else 0,
        generated_bytes=len(prompts) * body.n * max_tokens * (piece_bytes + 1),  # + a joiner
        entry_bytes=returned * (2 + (logprobs or 0)) * (piece_bytes + ENTRY_BYTES),  # + token, offset
    )


def refuse_by_size(cost: CompletionCost, settings: Settings) -> None:
    """413 when the answer would hold more log-probs or bytes than one answer may, naming the field
    that makes it so large: before anything is computed."""
    if cost.entries > settings.max_logprob_entries:
        raise too_large(
            "logprobs",
            f"this answer would hold {cost.entries} log-probs ({cost.samples} choices' tokens × (1 + "
            f"logprobs)), more than the limit of {settings.max_logprob_entries} per answer "
            f"({env_name('max_logprob_entries')}); ask fewer prompts, a smaller n, max_tokens or logprobs",
        )
    if cost.answer_bytes > settings.max_answer_bytes:
        parts = {"echo": cost.echo_bytes, "max_tokens": cost.generated_bytes, "logprobs": cost.entry_bytes}
        field = max(parts, key=lambda k: parts[k])
        raise too_large(
            field,
            f"this answer would be about {cost.answer_bytes} bytes ({cost.samples} choices: {cost.echo_bytes} "
            f"of echoed prompts, up to {cost.generated_bytes} of generated text, {cost.entry_bytes} of "
            f"log-probs), more than the limit of {settings.max_answer_bytes} ({env_name('max_answer_bytes')}); "
            "ask fewer prompts, a smaller n, or without echo",
        )


def refuse_by_cost(runner: ModelRunner, cost: CompletionCost) -> None:
    """413 past RNNLM_MAX_REQUEST_TOKENS, 503 while the tokens in flight are full: the runner's
    answer for a request of the completion's tokens, naming its largest part."""
    field = "max_tokens" if cost.generated >= cost.read + cost.echoed else "prompt"
    what = (
        f"{cost.prompts} prompts × n {cost.n} × max_tokens {cost.max_tokens} = {cost.generated} to generate, "
        f"{cost.read} prompt tokens read for it, {cost.echoed} echoed tokens scored"
    )
    runner.refuse_by_cost(cost.tokens, field, what)


# -- the engine calls ---------------------------------------------------------------------------------
async def echo_scores(
    runner: ModelRunner, body: CompletionRequest, prompts: Sequence[Prompt]
) -> list[PositionAlternatives] | None:
    """Every prompt's echoed tokens with their log-probs and ``logprobs`` alternatives, from one
    engine request (a pass over each prompt); None when the echo carries no log-probs."""
    if not body.echo or body.logprobs is None:
        return None
    res = await runner.alternatives([p.ids_read for p in prompts], body.logprobs)
    return res.sequences


class Turns:
    """Each prompt's generation, begun in prompt order, at most ``window`` prompts ahead of the
    one being read: a request with more prompts × n than RNNLM_MAX_REQUEST_ROWS runs in turns, and
    the rest of the generation batch stays free for other requests. The first turn is begun at
    once (:meth:`start`: a full queue is a 503 before any answer); a later turn that finds the
    queue full waits for room (the request's deadline bounds the wait). Leaving the ``async with``
    cancels every generation still running."""

    def __init__(
        self,
        runner: ModelRunner,
        body: CompletionRequest,
        prompts: Sequence[Prompt],
        max_tokens: int,
        window: int,
        backlog: int | None,
    ) -> None:
        k = body.logprobs or 0
        self.runner, self.window, self.backlog = runner, max(1, window), backlog
        self.requests = (
            [generation_request(body, p.text, max_tokens, k) for p in prompts] if max_tokens > 0 else []
        )
        self.streams: list[Generation] = []
        self._stack = contextlib.AsyncExitStack()

    def start(self) -> None:
        """Begin the first turn now; should the engine's queue be full, cancel it and raise."""
        try:
            while len(self.streams) < min(self.window, len(self.requests)):
                self._add(self.runner.begin(self.requests[len(self.streams)]))
        except BaseException:
            for stream in self.streams:
                stream.cancel()
            raise

    def _add(self, stream: Generation) -> None:
        stream.max_backlog = self.backlog
        self.streams.append(stream)

    async def __aenter__(self) -> Turns:
        await self._stack.__aenter__()
        for stream in self.streams:
            await self._stack.enter_async_context(stream)
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self._stack.__aexit__(*exc)

    async def stream(self, i: int) -> Generation | None:
        """Prompt ``i``'s generation (None: nothing to generate), the prompts before it read: the
        prompts up to ``i + window - 1`` are begun now."""
        if not self.requests:
            return None
        while len(self.streams) < min(i + self.window, len(self.requests)):
            stream = await self._begin(self.requests[len(self.streams)])
            self._add(stream)
            await self._stack.enter_async_context(stream)
        return self.streams[i]

    async def _begin(self, request: GenerationRequest) -> Generation:
        while True:
            try:
                return self.runner.begin(request)
            except Overloaded:  # the queue is full (QueueFull): this request was admitted, its turn comes
                await asyncio.sleep(QUEUE_RETRY_S)


def turn_window(settings: Settings, n: int) -> int:
    """Prompts a completion generates at once: RNNLM_MAX_REQUEST_ROWS samples (a prompt's n
    together, at least one prompt), and at most a quarter of the engine's queue."""
    return max(1, min(settings.max_request_rows // n, settings.engine_queue // 4))


# -- OpenAI's log-probs -------------------------------------------------------------------------------
def top_dict(
    tokenizer: Tokenizer, token_id: int, logprob: float | None, alternatives: Alternatives
) -> dict[str, float] | None:
    """The alternatives by vocabulary piece, and the token itself with its own log-prob."""
    if logprob is None:
        return None
    top = {tokenizer.piece(i): lp for i, lp in alternatives}
    top[tokenizer.piece(token_id)] = logprob
    return top


def prompt_logprobs(tokenizer: Tokenizer, prompt: Prompt, scored: PositionAlternatives) -> CompletionLogprobs:
    """The echoed part: one entry per prompt token (``<bos>`` first, when the prompt gave it), the
    first with null log-probs (it only conditions). ``scored`` is the pass over ``<bos>`` and the
    prompt: the first text token's log-prob is shown only after a ``<bos>`` the prompt gave."""
    ids, logprobs, alternatives = prompt.ids, scored.token_logprobs, scored.alternatives
    if not prompt.bos:  # the first token only conditions
        ids, logprobs, alternatives = ids[1:], logprobs[1:], alternatives[1:]
    shown = [lp if math.isfinite(lp) else None for lp in logprobs]  # JSON has no -inf
    tops = [top_dict(tokenizer, i, lp, alts) for i, lp, alts in zip(ids, shown, alternatives, strict=True)]
    starts = piece_starts(prompt.text, prompt.pieces)
    first = [None] if prompt.num_tokens else []
    return CompletionLogprobs.model_construct(
        tokens=[BOS, *prompt.pieces] if prompt.bos else list(prompt.pieces),
        token_logprobs=[*first, *shown],
        top_logprobs=[*first, *tops],
        text_offset=[0, *starts] if prompt.bos else starts,
    )


def generated_logprobs(
    tokenizer: Tokenizer,
    ids: Sequence[int],
    logprobs: Sequence[float],
    alternatives: Sequence[Alternatives],
    offsets: list[int],
) -> CompletionLogprobs:
    """The generated part: every token the model produced, as /generate's logprobs (<eos> included),
    each with the alternatives its decoding step saw (none when ``logprobs`` is 0)."""
    alternatives = alternatives or [[]] * len(ids)
    return CompletionLogprobs.model_construct(
        tokens=[tokenizer.piece(i) for i in ids],
        token_logprobs=list(logprobs),
        top_logprobs=[
            top_dict(tokenizer, i, lp, alts) for i, lp, alts in zip(ids, logprobs, alternatives, strict=True)
        ],
        text_offset=offsets,
    )


def generated_offsets(tokenizer: Tokenizer, ids: Sequence[int], base: int, end: int) -> list[int]:
    """Where each generated token starts in a choice's text: the completion starts at ``base``; a
    token past ``end`` (<eos>, or the text of a stop string that was cut) starts at ``end``."""
    text, starts = "", []
    for i in ids:
        piece = "" if i == EOS_ID else tokenizer.piece(i)
        text = tokenizer.append_piece(text, piece)
        starts.append(min(base + len(text) - len(piece), end))
    return starts


def joined(parts: Sequence[CompletionLogprobs]) -> CompletionLogprobs:
    return CompletionLogprobs.model_construct(
        tokens=[t for p in parts for t in p.tokens],
        token_logprobs=[t for p in parts for t in p.token_logprobs],
        top_logprobs=[t for p in parts for t in p.top_logprobs],
        text_offset=[t for p in parts for t in p.text_offset],
    )


def finish_reason(reason: str | None) -> OpenAIFinish:
    """OpenAI's name for why a sample ended: ``<eos>`` and a stop string are both "stop"."""
    return "length" if reason == "length" else "stop"


# -- a whole completion -------------------------------------------------------------------------------
@dataclass
class Completion:
    """What the engine gave for every prompt, before it is put in OpenAI's terms (:func:`answer`)."""

    prompts: list[Prompt]
    samples: list[list[Sample]]  # per prompt, its n samples ([] when nothing was generated)
    echo: list[PositionAlternatives] | None

    @property
    def tokens_scored(self) -> int:
        return sum(len(s.token_logprobs) for s in self.echo) if self.echo is not None else 0

    @property
    def tokens_generated(self) -> int:
        return sum(len(s.ids) for ss in self.samples for s in ss)


async def complete(
    turns: Turns, prompts: list[Prompt], echo: list[PositionAlternatives] | None
) -> Completion:
    """Every prompt's samples, unstreamed: read in prompt order while later turns generate."""
    samples: list[list[Sample]] = []
    async with turns:  # leaving early cancels every generation
        for i in range(len(prompts)):
            stream = await turns.stream(i)
            samples.append(await stream.collect() if stream is not None else [])
    return Completion(prompts, samples, echo)


def answer(
    tokenizer: Tokenizer, body: CompletionRequest, head: CompletionResponse, done: Completion
) -> CompletionResponse:
    """The completion in OpenAI's terms: a choice per prompt and sample, with their log-probs."""
    choices = []
    for pi, p in enumerate(done.prompts):
        echo_part = prompt_logprobs(tokenizer, p, done.echo[pi]) if done.echo is not None else None
        for j in range(body.n):
            s = done.samples[pi][j] if done.samples[pi] else Sample(seed=0, finish_reason="length")
            text = tokenizer.append_piece(p.text, s.text) if body.echo else s.text
            logprobs = None
            if body.logprobs is not None:
                offsets = generated_offsets(tokenizer, s.ids, len(text) - len(s.text), len(text))
                gen_part = generated_logprobs(tokenizer, s.ids, s.logprobs, s.alternatives, offsets)
                logprobs = joined([echo_part, gen_part]) if echo_part is not None else gen_part
            choices.append(
                CompletionChoice.model_construct(
                    index=pi * body.n + j,
                    text=text,
                    logprobs=logprobs,
                    finish_reason=finish_reason(s.finish_reason),
                )
            )
    prompt_tokens = sum(p.num_tokens for p in done.prompts)
    usage = CompletionUsage(
        prompt_tokens=prompt_tokens,
        completion_tokens=done.tokens_generated,
        total_tokens=prompt_tokens + done.tokens_generated,
    )
    return head.model_copy(update={"choices": choices, "usage": usage})


# -- the answer as JSON ---------------------------------------------------------------------------------
JSON_ITEMS_PER_CALL = 1024  # list items serialized by one call (which holds the GIL all along)


def completion_json(head: CompletionResponse, choices: Sequence[CompletionChoice]) -> str:
    """``head`` with these choices as JSON, a bounded piece at a time.

    An answer can hold hundreds of thousands of log-probs (RNNLM_MAX_LOGPROB_ENTRIES). Pydantic's
    and ``json``'s serializers hold the GIL for the whole of one call, so one call for the whole
    answer would stop the event loop's thread (and /health) for as long as it takes, even from a
    worker thread. Here no call serializes more than ``JSON_ITEMS_PER_CALL`` items, and the
    models are built without validation (``model_construct``: the values are the engine's)."""
    top = _dumps(head.model_dump(mode="json", exclude={"choices"}))  # id, object, created, model, usage
    return top[:-1] + ',"choices":[' + ",".join(_choice_json(c) for c in choices) + "]}"


def _choice_json(choice: CompletionChoice) -> str:
    lp = choice.logprobs
    logprobs = "null"
    if lp is not None:
        arrays: list[Sequence[object]] = [lp.tokens, lp.token_logprobs, lp.top_logprobs, lp.text_offset]
        names = ["tokens", "token_logprobs", "top_logprobs", "text_offset"]
        logprobs = "{" + ",".join(f'"{k}":{_array(v)}' for k, v in zip(names, arrays, strict=True)) + "}"
    return (
        f'{{"index":{choice.index},"text":{_dumps(choice.text)},"logprobs":{logprobs},'
        f'"finish_reason":{_dumps(choice.finish_reason)}}}'
    )


def _array(items: Sequence[object]) -> str:
    pieces = (
        _dumps(list(items[i : i + JSON_ITEMS_PER_CALL]))[1:-1]
        for i in range(0, len(items), JSON_ITEMS_PER_CALL)
    )
    return "[" + ",".join(pieces) + "]"


def _dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
