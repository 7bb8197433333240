"""The served models, each behind a runner that owns one batching engine.

::

    route (event loop) ──await──▶ ModelRunner.score / next_token / alternatives / embed / decode / begin / generate
                                       │
                                       ▼
                              model.inference.engine.Engine (one worker thread per model: dynamic batching
                                       │           of score/next-token, prefix-shared scoring,
                                       ▼           continuous batching of every generation)
                                  model library (model/)

Torch work never runs on the event loop, and concurrent requests to one model share batches.
A client that goes away leaves the ``async with`` of its stream, which frees its rows at once.

The runner is the one way from a route into its engine: every refusal of the engine becomes the
service's error here, once, whichever route (native or OpenAI's) asked (:func:`refusal`)::

    TooCostly         413 payload_too_large  one request past RNNLM_MAX_REQUEST_TOKENS (names the field)
    TokensInFlight    503 overloaded         RNNLM_MAX_TOKENS_IN_FLIGHT full (Retry-After)
    Overloaded        503 overloaded         the queue is full: QueueFull (Retry-After)
    DeadlineExceeded  504 timeout            the request's deadline passed
    EngineStopped     503 shutting_down      the model is stopping (Retry-After)

Each API renders the :class:`~service.errors.ApiError` in its own shape (OpenAI's under /v1/,
service/openai_errors.py). A generation is handed out as a :class:`Generation`, whose events and
samples carry the same mapping.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from model.decoding import DecodedPath, DecodeOptions, DecodeStats, WordGraph, decode_graph, search_cost
from model.inference.embedding import Embeddings
from model.inference.engine import (
    DeadlineExceeded,
    Engine,
    EngineConfig,
    EngineError,
    EngineObserver,
    EngineStopped,
    GenerationStream,
    Overloaded,
)
from model.inference.engine.decode import ShownTokenEvent
from model.inference.engine.stream import StreamStalled
from model.inference.engine.text import embed_with_engine, next_token_with_engine, score_with_engine
from model.inference.engine.types import TokensInFlight, TooCostly
from model.inference.generation import GenerationRequest, Sample, TokenEvent, seeded
from model.inference.sampling import SamplingParams
from model.inference.scoring import NextToken, Ranking, ScoreOptions
from model.models.device import resolve_device as _resolve
from model.models.lm import LanguageModel, NoHiddenStates
from model.models.loading import load_model
from model.models.positions import PositionsResult

from .errors import ApiError, invalid, overloaded, retry_after, too_large
from .heads import HOW_TO_SERVE, HeadLimits, HeadRunner, load_head

log = logging.getLogger("rnnlm.service")
SCORE_COST = ("candidates", "every candidate with the context, <bos> and <eos>")  # field, what counts
DECODE_COST = "the search's model rows, bounded before it starts"  # what a decode's cost counts
MAX_SHOWN_NAME = 64  # characters of an unknown model name an error message echoes
STOPPING_RETRY_S = 5  # the Retry-After of a model that is stopping

# the engine's vocabulary the routes need, from the one door: a full queue (Overloaded; QueueFull
# is one), a stalled stream's end, the token events that carry the text safe to show
__all__ = [
    "ENGINE_ERRORS",
    "REFUSALS",
    "Generation",
    "ModelRegistry",
    "ModelRunner",
    "Overloaded",
    "QueueFull",
    "SamplingFields",
    "ShownTokenEvent",
    "StreamStalled",
    "generation_request",
    "refusal",
    "refusals",
    "resolve_device",
    "shown_name",
]


class QueueFull(ApiError, Overloaded):
    """The engine's queue is full: the service's 503 (an :class:`ApiError`), and still the
    engine's :class:`Overloaded` for a caller that waits for room (a completion's later turns)."""

    def __init__(self, e: Overloaded) -> None:
        message = f"model busy: {e.queued} requests are already waiting; retry later"
        Exception.__init__(self, message)  # ApiError's and Overloaded's fields, set here for both
        self.status, self.type, self.message, self.field = 503, "overloaded", message, None
        self.headers = retry_after(e.retry_after_s)
        self.kind, self.queued, self.retry_after_s = e.kind, e.queued, e.retry_after_s


def refusal(e: EngineError, name: str = "", field: str | None = None, what: str = "") -> ApiError:
    """An engine refusal as the service answers it (the table above); ``field`` (and ``what``
    counts) name a request's cost, ``name`` the model."""
    if isinstance(e, TooCostly):
        return too_large(
            field or "body",
            f"this request costs {e.tokens} tokens ({what or 'its texts'}), more than the limit of {e.limit} "
            "per request (RNNLM_MAX_REQUEST_TOKENS); send fewer or shorter texts, or split the request",
        )
    if isinstance(e, TokensInFlight):
        return overloaded(
            f"model {name!r} is busy: {e.in_flight} tokens are already queued or running and this "
            f"request needs {e.tokens} more, past the limit of {e.limit} tokens in flight "
            "(RNNLM_MAX_TOKENS_IN_FLIGHT); retry later",
            e.retry_after_s,
        )
    if isinstance(e, Overloaded):
        return e if isinstance(e, QueueFull) else QueueFull(e)
    if isinstance(e, DeadlineExceeded):
        return ApiError(504, "timeout", "the request did not finish before its deadline")
    if isinstance(e, EngineStopped):
        return ApiError(
            503,
            "shutting_down",
            "the model is stopping and takes no new work",
            headers=retry_after(STOPPING_RETRY_S),
        )
    raise TypeError(f"not one of the engine's refusals: {e!r}")  # any other error stays a 500 (logged)


REFUSALS = (TooCostly, Overloaded, DeadlineExceeded, EngineStopped)  # what refusal() answers
# the app's last resort (service/errors.py): a refusal that reached it past the runner's methods
# (none does) is answered the same way
ENGINE_ERRORS: dict[type[Exception], Callable[[Any], ApiError]] = dict.fromkeys(REFUSALS, refusal)


@contextlib.contextmanager
def refusals(name: str = "", field: str | None = None, what: str = "") -> Iterator[None]:
    """Raise the engine's refusals inside as the service's errors (:func:`refusal`)."""
    try:
        yield
    except REFUSALS as e:
        raise refusal(e, name, field, what) from None


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


class Generation:
    """A generation begun through the runner: the engine's stream, whose refusals (a deadline
    passed, the model stopping) come out as the service's errors. ``async for event in it`` for
    its events, ``await it.collect()`` for its samples; leaving ``async with`` cancels it.
    A stall (:class:`StreamStalled`) is not a refusal and comes out as it is."""

    __slots__ = ("_name", "_stream")

    def __init__(self, stream: GenerationStream, name: str) -> None:
        self._stream, self._name = stream, name

    @property
    def request(self) -> GenerationRequest:
        return self._stream.request

    @property
    def prompt_ids(self) -> list[int]:
        return self._stream.prompt_ids

    @property
    def seed(self) -> int:
        """The base seed used (sample ``i`` uses ``seed + i``), given or drawn."""
        return self._stream.seed

    @property
    def max_backlog(self) -> int | None:
        """Events per sample not yet taken before the generation pauses (None: never)."""
        return self._stream.max_backlog

    @max_backlog.setter
    def max_backlog(self, value: int | None) -> None:
        self._stream.max_backlog = value

    @property
    def stall_s(self) -> float | None:
        """Paused this long, the stream ends (:class:`StreamStalled`); None: never."""
        return self._stream.stall_s

    @stall_s.setter
    def stall_s(self, value: float | None) -> None:
        self._stream.stall_s = value

    @property
    def stalled_out(self) -> bool:
        """The engine ended it for its stall (and counted it)."""
        return self._stream.stalled_out

    def cancel(self) -> None:
        self._stream.cancel()

    def __aiter__(self) -> Generation:
        return self

    async def __anext__(self) -> TokenEvent:
        try:
            return await self._stream.__anext__()
        except REFUSALS as e:
            raise refusal(e, self._name) from None

    async def __aenter__(self) -> Generation:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self._stream.__aexit__(*exc)

    async def collect(self) -> list[Sample]:
        """Run to the end: the samples of :func:`model.inference.generation.generate`."""
        with refusals(self._name):
            return await self._stream.collect()


@dataclass
class Decoded:
    """A search's answer: the paths best first, what the search did and its bound."""

    paths: list[DecodedPath]
    stats: DecodeStats
    cost: int  # the bound in model rows admitted (model.decoding.search_cost)


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
        """The engine itself, for its stats and gauges (tests, benchmarks); routes and the rest of
        the service go through the runner's methods, which answer its refusals."""
        if self._engine is None:
            raise RuntimeError(f"model {self.name}: engine not started")
        return self._engine

    async def score(
        self, candidates: Sequence[str], options: ScoreOptions, external_scores: Sequence[float] | None = None
    ) -> Ranking:
        with self._refusals(*SCORE_COST):
            return await score_with_engine(self.engine, candidates, options, external_scores)

    def refuse_score_by_cost(self, tokens: int) -> None:
        """Answer now (413 / 503) what :meth:`score` would answer by cost for ``tokens``, before
        anything is tokenized."""
        with self._refusals(*SCORE_COST):
            self.engine.refuse_by_cost("score", tokens)

    def refuse_by_cost(self, tokens: int, field: str, what: str) -> None:
        """Answer now (413 / 503) what the engine would answer by cost for a request of ``tokens``
        (``what`` says what counts, ``field`` is named), before any work: a request whose whole cost
        is counted up front, such as a completion's prompts, echo and tokens to generate."""
        with self._refusals(field, what):
            self.engine.refuse_by_cost("next_token", tokens)

    async def alternatives(self, seqs: Sequence[Sequence[int]], top_k: int) -> PositionsResult:
        """Each sequence's tokens after its first with their log-probs and the ``top_k`` most likely
        tokens at each position, from one pass over each (what an echoed prompt's log-probs need)."""
        with self._refusals("prompt", "every echoed prompt's tokens"):
            return await self.engine.alternatives(seqs, top_k=top_k)

    async def next_token(
        self, texts: Sequence[str], top_k: int, stages: dict[str, float] | None = None
    ) -> list[NextToken]:
        """``stages``, if given, receives where the time went (see ``next_token_distribution``)."""
        with self._refusals("text", "every text with <bos>"):
            return await next_token_with_engine(self.engine, texts, top_k, stages=stages)

    async def embed(self, texts: Sequence[str], pooling: str, normalize: bool) -> Embeddings:
        """Each text's vector (:func:`~model.inference.engine.text.embed_with_engine`); a model kind
        without hidden states (n-gram, window, mixture) is a 422 naming ``model``, before any work."""
        with self._refusals("texts", "every text with its <bos>"):
            try:
                return await embed_with_engine(self.engine, texts, pooling, normalize)
            except NoHiddenStates as e:
                raise invalid(
                    "model",
                    f"{self.name!r} is a model of kind {e.kind!r}, which has no hidden states to embed a text with; "
                    "name a recurrent model (kind rnn or hybrid in GET /models)",
                ) from None

    async def decode(
        self, graph_of: Callable[[], WordGraph], field: str, options: DecodeOptions, max_cost: int
    ) -> Decoded:
        """The best paths through the word graph ``graph_of()`` builds (a confusion network's or a
        lattice's, named ``field`` by the refusals), searched on the engine's worker.

        Plan (in a worker thread: parsing a lattice, tokenizing its words): the graph, checked (a
        ValueError, such as a lattice's line at fault, is a 422 naming ``field``), and its cost
        (:func:`~model.decoding.search_cost`): past ``max_cost`` (RNNLM_MAX_DECODE_COST) a 413
        naming ``field``. Run: the engine admits it at that cost (RNNLM_MAX_REQUEST_TOKENS,
        RNNLM_MAX_TOKENS_IN_FLIGHT) and stops it between levels once nobody waits (the request's
        deadline, a client gone). A backward model is a 422 naming ``model``, before any work."""
        if self.lm.tokenizer.backward:
            raise invalid(
                "model",
                f"{self.name!r} is a backward (right-to-left) model; a search reads its input left to "
                "right and needs a forward model",
            )

        def plan() -> tuple[WordGraph, int]:
            graph = graph_of()
            return graph, search_cost(self.lm, graph, options)

        try:
            graph, cost = await asyncio.to_thread(plan)
        except ValueError as e:
            raise invalid(field, str(e)) from None
        if cost > max_cost:
            raise too_large(
                field,
                f"this search may step up to {cost} model rows (beam {options.beam} × its slots or nodes, more "
                f"for words of several tokens, its alternatives), more than the limit of {max_cost} "
                "(RNNLM_MAX_DECODE_COST); lower `beam` or `max_arcs`, send fewer alternatives, or split it",
            )

        def job(lm: LanguageModel, should_stop: Callable[[], bool]) -> Decoded:
            stats = DecodeStats()
            return Decoded(decode_graph(lm, graph, options, stats, should_stop), stats, cost)

        with self._refusals(field, DECODE_COST):
            try:
                return await self.engine.run_job("decode", job, cost)
            except ValueError as e:  # the library's word on this input (every path pruned, …)
                raise invalid(field, str(e)) from None

    def _refusals(self, field: str | None = None, what: str = "") -> contextlib.AbstractContextManager:
        """The engine's refusals inside, as the service answers them (:func:`refusal`): by cost,
        413 naming ``field`` (``what`` counts), 503 + Retry-After while the tokens in flight are
        full; a full queue, a deadline or a stopping model as the table above."""
        return refusals(self.name, field, what)

    def begin(self, request: GenerationRequest) -> Generation:
        """Queue a generation (raises :class:`QueueFull`, a 503, at once when the queue is full);
        iterate it for its events or ``await it.collect()`` for the samples."""
        with self._refusals():
            return Generation(self.engine.generate(request), self.name)

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
    """The served models by name (a checkpoint directory's base name), in configured order, and the
    task heads served beside them (RNNLM_HEAD_DIRS: service/heads.py), every name distinct."""

    def __init__(self, runners: Sequence[ModelRunner], heads: Sequence[HeadRunner] = ()) -> None:
        if not runners:
            raise ValueError("no models to serve")
        self.runners = {r.name: r for r in runners}
        self.heads = {h.name: h for h in heads}
        names = [*(r.name for r in runners), *(h.name for h in heads)]
        if len(set(names)) != len(names):
            raise ValueError(
                f"two model or head directories share a name: {names}; give each a distinct name"
            )
        self.default = runners[0].name

    @classmethod
    def load(
        cls, model_dirs: Sequence[str | Path], device: str = "auto", head_dirs: Sequence[str | Path] = ()
    ) -> ModelRegistry:
        dev = resolve_device(device)
        runners = []
        for d in model_dirs:
            path = Path(d)
            log.info("loading model %s on %s", path.name, dev)
            runners.append(ModelRunner(path.resolve().name, load_model(path, device=dev)))
        return cls(runners, [load_head(d, dev) for d in head_dirs])

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

    def head(self, name: str | None, kind: str) -> HeadRunner:
        """The served head ``name`` of ``kind`` (None: the first of that kind). None served: 404
        naming ``model`` with how to serve one; an unknown name: 404; a language model's name or a
        head of another kind: 422."""
        of_kind = [h for h in self.heads.values() if h.kind == kind]
        if name is None and of_kind:
            return of_kind[0]
        if not of_kind:
            raise ApiError(
                404,
                "model_not_found",
                f"`model`: no {kind} is served; start the service with RNNLM_HEAD_DIRS naming "
                f"{HOW_TO_SERVE.get(kind, f'a {kind} checkpoint')} (GET /models lists the served `heads`)",
                field="model",
            )
        head = self.heads.get(name or "")
        if head is not None and head.kind == kind:
            return head
        served = ", ".join(h.name for h in of_kind)
        if head is not None or name in self.runners:
            what = f"a {head.kind}" if head is not None else "a language model"
            raise invalid(
                "model", f"{shown_name(name or '')} is {what}, not a {kind}; name a {kind} (served: {served})"
            )
        raise ApiError(
            404,
            "model_not_found",
            f"`model`: no served {kind} named {shown_name(name or '')} (served: {served})",
            field="model",
        )

    async def start(
        self,
        config: EngineConfig,
        observer: EngineObserver | None = None,
        head_limits: HeadLimits | None = None,
    ) -> None:
        for runner in self.runners.values():
            await runner.start(config, observer)
        if self.heads:
            if head_limits is None:
                raise ValueError("serving heads needs their limits (service.heads.head_limits)")
            for head in self.heads.values():
                await head.start(head_limits)

    async def stop(self, grace_s: float = 10.0) -> None:
        for runner in self.runners.values():
            await runner.stop(grace_s)
        for head in self.heads.values():
            await head.stop(grace_s)
