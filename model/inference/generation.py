"""Text generation, one request at a time: prompt -> prefill -> (choose, step)* -> stop.

``generate_stream`` yields one :class:`TokenEvent` per generated token, for ``n`` samples that
share the prompt (rows of one batch). Sample ``i`` of a request with seed ``s`` uses seed
``s + i``, so every sample is reproducible on its own. The serving engine runs many requests in
one batch with the same parts (:mod:`model.inference.sampling`); this loop is the reference it must match.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import torch

from model.inference.sampling import (
    MAX_SEED,
    ParamSpec,
    SamplingParams,
    StoppingCriteria,
    TokenChooser,
    draw_seed,
)
from model.models.lm import LanguageModel
from model.models.positions import Alternatives, top_alternatives
from model.text.tokenizer import BOS_ID, EOS_ID, Tokenizer

REQUEST_PARAMS: dict[str, ParamSpec] = {  # beside model.inference.sampling.SAMPLING_PARAMS
    "max_new_tokens": ParamSpec("Most tokens to generate per sample.", ge=0),
    "n": ParamSpec("Independent samples of the same prompt.", ge=1),
    "top_logprobs": ParamSpec("With each token, this many most likely tokens at its position.", ge=0),
}


@dataclass
class GenerationRequest:
    """What to generate; checks itself as :class:`SamplingParams` does (``ValueError`` naming the
    field out of its range in :data:`REQUEST_PARAMS`)."""

    prompt: str = ""
    max_new_tokens: int = 50
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stop: list[str] = field(default_factory=list)
    n: int = 1
    top_logprobs: int = 0  # with each token, this many most likely tokens at its position (raw model)

    def __post_init__(self) -> None:
        for name, spec in REQUEST_PARAMS.items():
            spec.check(name, getattr(self, name))


@dataclass
class TokenEvent:
    sample: int  # which of the n samples
    token_id: int
    text: str  # the token's text ("" for <eos>)
    logprob: float  # natural log-prob under the raw model (before temperature etc.)
    finish_reason: str | None = None  # set on the sample's last token
    alternatives: Alternatives = field(default_factory=list)  # the request's top_logprobs most likely


@dataclass
class Sample:
    seed: int
    ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    text: str = ""
    finish_reason: str | None = None
    alternatives: list[Alternatives] = field(default_factory=list)  # per token, when asked for


def seeded(request: GenerationRequest) -> GenerationRequest:
    """The request with its base seed decided: the one it gives, or a fresh draw. Sample ``i``
    uses ``seed + i``. The one place a default seed is made."""
    if request.sampling.seed is not None:
        return request
    return replace(request, sampling=replace(request.sampling, seed=draw_seed()))


def sample_choosers(request: GenerationRequest) -> list[TokenChooser]:
    base = seeded(request).sampling.seed
    assert base is not None
    # sample i draws with seed + i, taken mod 2^32 as the noise takes every seed (so a seed near
    # MAX_SEED stays in range; the sample reports seed + i, see new_samples)
    return [TokenChooser(replace(request.sampling, seed=(base + i) & MAX_SEED)) for i in range(request.n)]


def new_samples(request: GenerationRequest) -> list[Sample]:
    """Empty samples for a seeded request, to be filled by :func:`add_event`."""
    assert request.sampling.seed is not None, "seed the request first (generation.seeded)"
    return [Sample(seed=request.sampling.seed + i) for i in range(request.n)]


def add_event(
    samples: list[Sample], ev: TokenEvent, tokenizer: Tokenizer, stopping: StoppingCriteria
) -> None:
    """Fold one token event into its sample: how every caller collects a generation."""
    s = samples[ev.sample]
    s.ids.append(ev.token_id)
    s.logprobs.append(ev.logprob)
    if ev.alternatives:
        s.alternatives.append(ev.alternatives)
    s.text = tokenizer.append_piece(s.text, ev.text)
    if ev.finish_reason:
        s.finish_reason = ev.finish_reason
        s.text = stopping.trim(s.text)


def generate_stream(lm: LanguageModel, request: GenerationRequest) -> Iterator[TokenEvent]:
    prompt_ids = lm.tokenizer.encode(request.prompt).ids
    choosers = sample_choosers(request)
    stopping = StoppingCriteria(request.max_new_tokens, request.stop)
    history = [list(prompt_ids) for _ in choosers]
    texts = [""] * len(choosers)
    counts = [0] * len(choosers)
    live = list(range(len(choosers)))  # rows still generating, in state order
    if request.max_new_tokens <= 0:
        return
    logprobs, state = lm.prefill([[BOS_ID, *prompt_ids]] * len(choosers))
    while live:
        next_ids, keep = [], []
        for row, s in enumerate(live):
            token = choosers[s].next_id(logprobs[row], history[s])
            history[s].append(token)
            counts[s] += 1
            piece = "" if token == EOS_ID else lm.tokenizer.piece(token)
            texts[s] = lm.tokenizer.append_piece(texts[s], piece)
            stop, reason = stopping(token, counts[s], texts[s])
            [alternatives] = top_alternatives(logprobs[row : row + 1], request.top_logprobs)
            yield TokenEvent(s, token, piece, float(logprobs[row, token]), reason, alternatives)
            if not stop:
                next_ids.append(token)
                keep.append(row)
        live = [live[r] for r in keep]
        if live:
            state = lm.select_state(state, keep)
            logprobs, state = lm.step(state, torch.tensor(next_ids, dtype=torch.long))


def generate(lm: LanguageModel, request: GenerationRequest) -> list[Sample]:
    """Run :func:`generate_stream` to the end and collect each sample."""
    request = seeded(request)
    samples = new_samples(request)
    stopping = StoppingCriteria(request.max_new_tokens, request.stop)
    for ev in generate_stream(lm, request):
        add_event(samples, ev, lm.tokenizer, stopping)
    return samples
