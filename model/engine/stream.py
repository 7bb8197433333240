"""The caller's side of one generation request: an async iterator of :class:`TokenEvent`.

The worker thread hands events over with ``loop.call_soon_threadsafe``; the iterator reads them
from an ``asyncio.Queue``. Leaving early (``break`` inside ``async with``, ``cancel()``, the task
being cancelled, the deadline passing) frees the request's rows before the next decoding step.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from ..generation import GenerationRequest, Sample, TokenEvent, add_event, new_samples
from ..sampling import StoppingCriteria
from .types import DeadlineExceeded

if TYPE_CHECKING:
    from .core import Engine

_END = object()


class GenerationStream:
    """``async for event in stream``: the tokens of every sample of one request, as they come.

    Created by :meth:`Engine.generate`. ``seed`` is the base seed used (sample ``i`` uses
    ``seed + i``), whether the request gave one or not.
    """

    def __init__(
        self,
        engine: Engine,
        request: GenerationRequest,
        prompt_ids: list[int],
        deadline: float | None,
    ) -> None:
        assert request.sampling.seed is not None, "Engine.generate seeds the request"
        self.request = request
        self.prompt_ids = prompt_ids
        self.deadline = deadline  # time.monotonic() by which the request must be done
        self.submitted = time.monotonic()
        self.cancelled = False  # set by the caller's side; the worker drops the rows
        self._engine = engine
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue = asyncio.Queue()
        self._finished = False

    @property
    def seed(self) -> int:
        """The base seed used (sample ``i`` uses ``seed + i``), given or drawn."""
        assert self.request.sampling.seed is not None
        return self.request.sampling.seed

    # -- the worker's side (called on the event loop through call_soon_threadsafe) ---------------
    def _push(self, events: list[TokenEvent], end: BaseException | bool) -> None:
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
            self._engine._cancel_stream(self)

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
        return item

    async def __aenter__(self) -> GenerationStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cancel()

    async def collect(self) -> list[Sample]:
        """Run to the end: the same samples as :func:`model.generation.generate`."""
        stopping = StoppingCriteria(self.request.max_new_tokens, self.request.stop)
        samples = new_samples(self.request)
        async with self:
            async for ev in self:
                add_event(samples, ev, self._engine.lm.tokenizer, stopping)
        return samples
