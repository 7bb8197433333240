"""The served models, each behind a runner that owns one batching engine.

::

    route (event loop) ──await──▶ ModelRunner.score / next_token / alternatives / begin / generate
                                       │
                                       ▼
                              model.inference.engine.Engine (one worker thread per model: dynamic batching
                                       │           of score/next-token, prefix-shared scoring,
                                       ▼           continuous batching of every generation)
                                  model library (model/)

Torch work never runs on the event loop, and concurrent requests to one model share batches.
A client that goes away leaves the ``async with`` of its stream, which frees its rows at once.

The runner is the one way from a route into its engine: the engine's refusals by cost become
their 413 / 503 here (``_costed``), whichever route asked.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Protocol

from model.inference.engine import Engine, EngineConfig, EngineObserver, GenerationStream
from model.inference.engine.text import next_token_distribution, score_candidates
from model.inference.engine.types import TokensInFlight, TooCostly
from model.inference.generation import GenerationRequest, Sample, TokenEvent, seeded
from model.inference.sampling import SamplingParams
from model.inference.scoring import NextToken, Ranking, ScoreOptions
from model.models.device import resolve_device as _resolve
from model.models.lm import LanguageModel
from model.models.loading import load_model
from model.models.positions import PositionsResult

from .errors import ApiError, overloaded, too_large

log = logging.getLogger("rnnlm.service")
SCORE_COST = ("candidates", "every candidate with the context, <bos> and <eos>")  # field, what counts
MAX_SHOWN_NAME = 64  # characters of an unknown model name an error message echoes


class SamplingFields(Protocol):
    """What /generate and /v1/completions both carry about sampling (same names, same meaning)."""

    @property
    def stop(self) -> Sequence[str]: ...
    @property
    def n(self) -> int: ...
    @property
    def temperature(self) -> float: ...
    @property
    def top_k(self) -> int: ...
    @property
    def top_p(self) -> float: ...
    @property
    def repetition_penalty(self) -> float: ...
    @property
    def seed(self) -> int | None: ...


def generation_request(
    body: SamplingFields, prompt: str, max_new_tokens: int, top_logprobs: int = 0
) -> GenerationRequest:
    """The engine request for a body's sampling fields, its seed decided (sample i uses seed + i);
    ``top_logprobs``: alternatives handed over with each token."""
    return seeded(
        GenerationRequest(
            prompt=prompt,
            max_new_tokens=max_new_tokens,
            stop=list(body.stop),
            n=body.n,
            top_logprobs=top_logprobs,
            sampling=SamplingParams(
                temperature=body.temperature,
                top_k=body.top_k,
                top_p=body.top_p,
                repetition_penalty=body.repetition_penalty,
                seed=body.seed,
            ),
        )
    )


class ModelRunner:
    """One model and the engine that runs all of its work."""

    def __init__(self, name: str, lm: LanguageModel) -> None:
        self.name = name
        self.lm = lm
        self._engine: Engine | None = None

    async def start(self, config: EngineConfig, observer: EngineObserver | None = None) -> None:
        self._engine = Engine(self.lm, config, observer)
        await self._engine.start()

    async def stop(self, grace_s: float = 10.0) -> None:
        if self._engine is not None:
            await self._engine.stop(grace_s)

    @functools.cached_property
    def max_piece_bytes(self) -> int:
        """The longest vocabulary piece in UTF-8 bytes: the most text one token adds to an answer."""
        return max(len(piece.encode("utf-8", "surrogatepass")) for piece in self.lm.tokenizer.tokens)

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise RuntimeError(f"model {self.name}: engine not started")
        return self._engine

    async def score(
        self, candidates: Sequence[str], options: ScoreOptions, external_scores: Sequence[float] | None = None
    ) -> Ranking:
        with self._costed(*SCORE_COST):
            return await score_candidates(self.engine, candidates, options, external_scores)

    def refuse_score_by_cost(self, tokens: int) -> None:
        """Answer now (413 / 503) what :meth:`score` would answer by cost for ``tokens``, before
        anything is tokenized."""
        with self._costed(*SCORE_COST):
            self.engine.refuse_by_cost("score", tokens)

    def refuse_by_cost(self, tokens: int, field: str, what: str) -> None:
        """Answer now (413 / 503) what the engine would answer by cost for a request of ``tokens``
        (``what`` says what counts, ``field`` is named), before any work: a request whose whole cost
        is counted up front, such as a completion's prompts, echo and tokens to generate."""
        with self._costed(field, what):
            self.engine.refuse_by_cost("next_token", tokens)

    async def alternatives(self, seqs: Sequence[Sequence[int]], top_k: int) -> PositionsResult:
        """Each sequence's tokens after its first with their log-probs and the ``top_k`` most likely
        tokens at each position, from one pass over each (what an echoed prompt's log-probs need)."""
        with self._costed("prompt", "every echoed prompt's tokens"):
            return await self.engine.alternatives(seqs, top_k=top_k)

    async def next_token(
        self, texts: Sequence[str], top_k: int, stages: dict[str, float] | None = None
    ) -> list[NextToken]:
        """``stages``, if given, receives where the time went (see ``next_token_distribution``)."""
        with self._costed("text", "every text with <bos>"):
            return await next_token_distribution(self.engine, texts, top_k, stages=stages)

    @contextlib.contextmanager
    def _costed(self, field: str, what: str) -> Iterator[None]:
        """The engine's refusals by cost, as the service answers them: 413 for a request that costs
        more than one may (naming ``field``), 503 + Retry-After while the tokens in flight are full."""
        try:
            yield
        except TooCostly as e:
            raise too_large(
                field,
                f"this request costs {e.tokens} tokens ({what}), more than the limit of {e.limit} per "
                "request (RNNLM_MAX_REQUEST_TOKENS); send fewer or shorter texts, or split the request",
            ) from None
        except TokensInFlight as e:
            raise overloaded(
                f"model {self.name!r} is busy: {e.in_flight} tokens are already queued or running and this "
                f"request needs {e.tokens} more, past the limit of {e.limit} tokens in flight "
                "(RNNLM_MAX_TOKENS_IN_FLIGHT); retry later",
                e.retry_after_s,
            ) from None

    def begin(self, request: GenerationRequest) -> GenerationStream:
        """Queue a generation (raises Overloaded at once when the queue is full); iterate the
        stream for its events or ``await stream.collect()`` for the samples."""
        return self.engine.generate(request)

    async def generate(self, request: GenerationRequest) -> list[Sample]:
        return await self.begin(request).collect()

    async def generate_stream(self, request: GenerationRequest) -> AsyncIterator[TokenEvent]:
        stream = self.begin(request)
        async with stream:
            async for event in stream:
                yield event

    def describe(self) -> dict:
        return self.lm.describe()


def shown_name(name: str) -> str:
    """A requested model name as an error message may echo it: short ones whole, long ones cut."""
    if len(name) <= MAX_SHOWN_NAME:
        return repr(name)
    return f"{name[:MAX_SHOWN_NAME]!r}… (a name of {len(name)} characters)"


def resolve_device(requested: str) -> str:
    """The served device (see :func:`model.models.device.resolve_device`), errors naming RNNLM_DEVICE."""
    return _resolve(requested, "RNNLM_DEVICE")


class ModelRegistry:
    """The served models by name (a checkpoint directory's base name), in configured order."""

    def __init__(self, runners: Sequence[ModelRunner]) -> None:
        if not runners:
            raise ValueError("no models to serve")
        self.runners = {r.name: r for r in runners}
        if len(self.runners) != len(runners):
            names = [r.name for r in runners]
            raise ValueError(f"two model directories share a name: {names}; give each a distinct name")
        self.default = runners[0].name

    @classmethod
    def load(cls, model_dirs: Sequence[str | Path], device: str = "auto") -> ModelRegistry:
        dev = resolve_device(device)
        runners = []
        for d in model_dirs:
            path = Path(d)
            log.info("loading model %s on %s", path.name, dev)
            runners.append(ModelRunner(path.resolve().name, load_model(path, device=dev)))
        return cls(runners)

    def get(self, name: str | None) -> ModelRunner:
        if name is None:
            return self.runners[self.default]
        runner = self.runners.get(name)
        if runner is None:
            raise ApiError(
                404,
                "model_not_found",
                f"`model`: no served model named {shown_name(name)} (served: {', '.join(self.runners)})",
                field="model",
            )
        return runner

    async def start(self, config: EngineConfig, observer: EngineObserver | None = None) -> None:
        for runner in self.runners.values():
            await runner.start(config, observer)

    async def stop(self, grace_s: float = 10.0) -> None:
        for runner in self.runners.values():
            await runner.stop(grace_s)
