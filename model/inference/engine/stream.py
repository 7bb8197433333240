"""The caller's side of one generation request: an async iterator of :class:`TokenEvent`.

The worker thread hands events over with ``loop.call_soon_threadsafe``; the iterator reads them
from an ``asyncio.Queue``. Leaving early (``break`` inside ``async with``, ``cancel()``, the task
being cancelled, the deadline passing) frees the request's rows before the next decoding step.

Backpressure: the worker counts the events it hands over, the iterator those it takes. A reader
more than ``max_backlog`` events per sample behind (an HTTP client that does not read, so its
send blocks) has its rows parked, out of the decoding steps, until it has caught up to half
that; parked longer than ``stall_s``, the stream ends with :class:`StreamStalled`.

The stream knows its engine only as a :class:`StreamOwner` (``cancel_stream``, ``wake``); the
engine's worker uses the stream's public side (``push``, ``handed``, ``loop`` and the
backpressure checks). Neither reaches into the other's private state.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

from model.inference.engine.types import DeadlineExceeded
from model.inference.generation import GenerationRequest, Sample, TokenEvent, add_event, new_samples
from model.inference.sampling import StoppingCriteria
from model.text.tokenizer import Tokenizer

_END = object()


class StreamOwner(Protocol):
    """What a stream asks of the engine that runs it (:class:`~model.inference.engine.core.Engine`)."""

    def cancel_stream(self, stream: GenerationStream) -> None:
        """The caller has left: drop the generation (queued or running)."""

    def wake(self) -> None:
        """A paused stream's reader has caught up: have the worker look again."""


class StreamStalled(Exception):
    """The stream's reader took nothing for ``stall_s`` while its generation was paused."""


class GenerationStream:
    """``async for event in stream``: the tokens of every sample of one request, as they come.

    Created by :meth:`Engine.generate`. ``seed`` is the base seed used (sample ``i`` uses
    ``seed + i``), whether the request gave one or not.
    """

    def __init__(
        self,
        engine: StreamOwner,
        request: GenerationRequest,
        prompt_ids: list[int],
        deadline: float | None,
        tokenizer: Tokenizer,
    ) -> None:
        assert request.sampling.seed is not None, "Engine.generate seeds the request"
        self.request = request
        self.prompt_ids = prompt_ids
        self.deadline = deadline  # time.monotonic() by which the request must be done
        self.submitted = time.monotonic()
        self.cancelled = False  # set by the caller's side; the worker drops the rows
        self._engine = engine
        self._tokenizer = tokenizer  # collect() assembles the samples' text with it
        self.loop = asyncio.get_running_loop()  # the caller's: the worker hands events over on it
        self._queue: asyncio.Queue = asyncio.Queue()
        self._finished = False
        self.max_backlog: int | None = 64  # events per sample not yet taken before pausing; None: never
        self.stall_s: float | None = None  # paused this long: end the stream; None: wait (the deadline)
        self.paused_since: float | None = None  # worker: when its rows were parked
        self.stalled_out = False  # worker: ended for its stall (counted there)
        self._handed = 0  # worker: token events handed over
        self._taken = 0  # event loop: token events taken

    # -- backpressure (read by the worker) -------------------------------------------------------
    @property
    def backlog(self) -> int:
        """Token events handed over that the reader has not taken yet."""
        return self._handed - self._taken

    def behind(self) -> bool:
        """The reader is too far behind: pause the generation."""
        return self.max_backlog is not None and self.backlog >= self.max_backlog * self.request.n

    def caught_up(self) -> bool:
        """A paused stream's reader has caught up enough to go on."""
        return self.max_backlog is None or self.backlog <= self.max_backlog * self.request.n // 2

    def stalled(self, now: float) -> bool:
        """Paused for longer than ``stall_s``."""
        return (
            self.stall_s is not None
            and self.paused_since is not None
            and now - self.paused_since > self.stall_s
        )

    def wake_at(self) -> float | None:
        """When a paused stream needs the worker even if its reader takes nothing."""
        ends = [t for t in (self.deadline, self._stall_end()) if t is not None]
        return min(ends) if ends else None

    def _stall_end(self) -> float | None:
        if self.stall_s is None or self.paused_since is None:
            return None
        return self.paused_since + self.stall_s

    @property
    def seed(self) -> int:
        """The base seed used (sample ``i`` uses ``seed + i``), given or drawn."""
        assert self.request.sampling.seed is not None
        return self.request.sampling.seed

    # -- the worker's side -----------------------------------------------------------------------
    def handed(self, events: int) -> None:
        """The worker is handing ``events`` token events over (counted before they are taken)."""
        self._handed += events

    def push(self, events: list[TokenEvent], end: BaseException | bool) -> None:
        """Hand events over, then the end (True) or an error; called on :attr:`loop`, through
        ``call_soon_threadsafe`` from the worker."""
        for ev in events:
            self._queue.put_nowait(ev)
        if end is True:
            self._queue.put_nowait(_END)
        elif isinstance(end, BaseException):
            self._queue.put_nowait(end)

    # -- the caller's side -----------------------------------------------------------------------
    def cancel(self) -> None:
        """Stop generating now (a client went away); the rows leave before the next step."""
        if not self._finished:
            self._finished = True
            self.cancelled = True
            self._engine.cancel_stream(self)

    def __aiter__(self) -> GenerationStream:
        return self

    async def __anext__(self) -> TokenEvent:
        if self._finished:
            raise StopAsyncIteration
        try:
            if self.deadline is None:
                item = await self._queue.get()
            else:
                item = await asyncio.wait_for(self._queue.get(), max(0.0, self.deadline - time.monotonic()))
        except TimeoutError:
            self.cancel()
            raise DeadlineExceeded("generation did not finish before its deadline") from None
        except asyncio.CancelledError:
            self.cancel()
            raise
        if item is _END:
            self._finished = True
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            self._finished = True
            raise item
        self._taken += 1
        if self.paused_since is not None and self.caught_up():
            self._engine.wake()  # the worker puts its rows back into the batch
        return item

    async def __aenter__(self) -> GenerationStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cancel()

    async def collect(self) -> list[Sample]:
        """Run to the end: the same samples as :func:`model.inference.generation.generate`."""
        stopping = StoppingCriteria(self.request.max_new_tokens, self.request.stop)
        samples = new_samples(self.request)
        async with self:
            async for ev in self:
                add_event(samples, ev, self._tokenizer, stopping)
        return samples
