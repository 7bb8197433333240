"""What a /v1/completions request asks of the engine: the calls /score and /generate make, and
OpenAI's log-probs assembled from what they return.

::

    prompt (text | token ids) ─▶ Prompt: its text, ids and pieces (ids ⇄ text: service/tokens.py)
      echo + logprobs ─▶ runner.score([text], bos, eos=False)    the numbers POST /score returns
      max_tokens > 0  ─▶ runner.begin(GenerationRequest)         the samples POST /generate returns
      logprobs ≥ 1    ─▶ engine.next_token(prefixes)             the top alternatives at each position
                         (prefixes of one text share the engine's prefix tree: a pass per call)

Echoed positions: the first prompt token only conditions, so its log-prob is null (as in OpenAI's
API, and as /score with ``bos: false`` leaves it unscored), unless a token-id prompt starts with
the ``<bos>`` id: then ``<bos>`` is the null position and the first text token is scored from it
(/score with ``bos: true``). ``<eos>`` is never scored after a prompt (``eos: false``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import cast

from model.engine import Engine, GenerationStream
from model.generation import Sample
from model.scoring import ScoreOptions
from model.tokenizer import BOS, BOS_ID, EOS_ID, PAD_ID, Tokenizer

from .compat_schemas import (
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionUsage,
    OpenAIFinish,
    PromptInput,
)
from .errors import invalid, too_large
from .limits import env_name
from .runner import ModelRunner, generation_request
from .tokens import ids_to_text, piece_starts

# Next-token prefixes per engine call: bounds its (prefixes, V) log-probs and how long it holds the
# worker; between calls, other requests run and a passed deadline ends this one.
PREFIXES_PER_CALL = 256
Alternatives = list[tuple[int, float]]  # (token id, log-prob), most likely first


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


# -- the engine calls ---------------------------------------------------------------------------------
def begin_all(
    runner: ModelRunner, body: CompletionRequest, prompts: list[Prompt], max_tokens: int
) -> list[GenerationStream | None]:
    """Queue every prompt's generation now (none for ``max_tokens`` 0). Should the queue be full
    for one (503), those already queued are cancelled."""
    streams: list[GenerationStream | None] = []
    try:
        for p in prompts:
            streams.append(
                runner.begin(generation_request(body, p.text, max_tokens)) if max_tokens > 0 else None
            )
    except BaseException:
        for stream in streams:
            if stream is not None:
                stream.cancel()
        raise
    return streams


async def echo_logprobs(runner: ModelRunner, prompt: Prompt) -> tuple[list[float | None], int]:
    """The echoed tokens' log-probs, as POST /score computes them, and how many were scored."""
    if prompt.num_tokens == 0:
        return [], 0
    ranking = await runner.score([prompt.text], ScoreOptions(bos=prompt.bos, eos=False))
    return [None, *ranking.results[0].token_logprobs], ranking.tokens_scored


def echo_positions(prompt: Prompt) -> list[tuple[list[int], int]]:
    """``(sequence, prefix length)`` before each echoed token that has a log-prob."""
    seq = prompt.ids_read
    return [(seq, k) for k in range(1 if prompt.bos else 2, len(seq))]


def generated_positions(prompt: Prompt, sample: Sample) -> list[tuple[list[int], int]]:
    """``(sequence, prefix length)`` before each generated token."""
    seq = [*prompt.ids_read, *sample.ids]
    return [(seq, len(prompt.ids_read) + j) for j in range(len(sample.ids))]


async def top_alternatives(
    engine: Engine, positions: Sequence[tuple[list[int], int]], k: int
) -> list[Alternatives]:
    """The ``k`` most likely tokens after each ``sequence[:length]``, under the raw model."""
    out: list[Alternatives] = []
    for start in range(0, len(positions), PREFIXES_PER_CALL):
        prefixes = [seq[:length] for seq, length in positions[start : start + PREFIXES_PER_CALL]]
        for d in await engine.next_token(prefixes, top_k=k):
            out.append(
                [(i, lp) for i, lp in zip(d.top_ids, d.top_logprobs, strict=True) if math.isfinite(lp)]
            )
    return out


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


def prompt_logprobs(
    tokenizer: Tokenizer, prompt: Prompt, logprobs: list[float | None], alternatives: Iterator[Alternatives]
) -> CompletionLogprobs:
    """The echoed part: one entry per prompt token (``<bos>`` first, when the prompt gave it)."""
    ids = [BOS_ID, *prompt.ids] if prompt.bos else prompt.ids
    starts = piece_starts(prompt.text, prompt.pieces)
    return CompletionLogprobs(
        tokens=[BOS, *prompt.pieces] if prompt.bos else list(prompt.pieces),
        token_logprobs=logprobs,
        top_logprobs=[
            top_dict(tokenizer, i, lp, next(alternatives) if lp is not None else [])
            for i, lp in zip(ids, logprobs, strict=True)
        ],
        text_offset=[0, *starts] if prompt.bos else starts,
    )


def generated_logprobs(
    tokenizer: Tokenizer,
    ids: Sequence[int],
    logprobs: Sequence[float],
    alternatives: Iterator[Alternatives],
    offsets: list[int],
) -> CompletionLogprobs:
    """The generated part: every token the model produced, as /generate's logprobs (<eos> included)."""
    return CompletionLogprobs(
        tokens=[tokenizer.piece(i) for i in ids],
        token_logprobs=list(logprobs),
        top_logprobs=[
            top_dict(tokenizer, i, lp, next(alternatives)) for i, lp in zip(ids, logprobs, strict=True)
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
    return CompletionLogprobs(
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
    choices: list[CompletionChoice]
    usage: CompletionUsage
    tokens_scored: int


async def complete(
    runner: ModelRunner, body: CompletionRequest, prompts: list[Prompt], max_tokens: int
) -> Completion:
    """Every choice of a request, unstreamed. All generations are queued at once (the engine runs
    them together); echo scores and alternatives are one-shot engine requests."""
    tok = runner.lm.tokenizer
    scored: list[tuple[list[float | None], int]] = []
    async with contextlib.AsyncExitStack() as stack:  # leaving early cancels every generation
        streams = begin_all(runner, body, prompts, max_tokens)
        for stream in streams:
            if stream is not None:
                await stack.enter_async_context(stream)
        if body.echo and body.logprobs is not None:
            scored = list(await asyncio.gather(*(echo_logprobs(runner, p) for p in prompts)))
        samples = [await s.collect() if s is not None else [] for s in streams]
    alternatives: Iterator[Alternatives] = itertools.repeat([])  # logprobs: 0 asks for none
    if body.logprobs:
        positions = []
        for p, ss in zip(prompts, samples, strict=True):
            positions += echo_positions(p) if body.echo else []
            for s in ss:
                positions += generated_positions(p, s)
        alternatives = iter(await top_alternatives(runner.engine, positions, body.logprobs))

    choices = []
    for pi, p in enumerate(prompts):
        echo_part = prompt_logprobs(tok, p, scored[pi][0], alternatives) if scored else None
        for j in range(body.n):
            s = samples[pi][j] if samples[pi] else Sample(seed=0, finish_reason="length")
            text = tok.append_piece(p.text, s.text) if body.echo else s.text
            logprobs = None
            if body.logprobs is not None:
                offsets = generated_offsets(tok, s.ids, len(text) - len(s.text), len(text))
                gen_part = generated_logprobs(tok, s.ids, s.logprobs, alternatives, offsets)
                logprobs = joined([echo_part, gen_part]) if echo_part is not None else gen_part
            choices.append(
                CompletionChoice(
                    index=pi * body.n + j,
                    text=text,
                    logprobs=logprobs,
                    finish_reason=finish_reason(s.finish_reason),
                )
            )
    prompt_tokens = sum(p.num_tokens for p in prompts)
    completion_tokens = sum(len(s.ids) for ss in samples for s in ss)
    usage = CompletionUsage(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
    )
    return Completion(choices, usage, sum(n for _, n in scored))
