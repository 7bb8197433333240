"""The limit on a request's stop strings, and the SSE response that ends a stream whose client
stopped reading. The text a streamed sample may show so far (held back while it may begin a stop
string) is worked out once, by the engine: ``ShownTokenEvent.shown``
(:class:`model.inference.sampling.StreamedText`), for /generate and /v1/completions alike.

Backpressure: a client that does not read fills its connection's buffers, so sending an event
blocks; the route then takes no more events and the engine pauses the generation
(``GenerationStream.max_backlog``). :class:`StallBoundedEventSource` ends a stream whose send
has been blocked for ``RNNLM_STREAM_STALL_S``: its generation is cancelled and its slot freed.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable

from sse_starlette import EventSourceResponse
from sse_starlette.sse import SendTimeoutError
from starlette.types import Receive, Scope, Send

from .errors import invalid

log = logging.getLogger("rnnlm.service")


def check_stop_size(stop: list[str], max_bytes: int) -> None:
    """422 naming ``stop`` when the stop strings together are larger than ``max_bytes`` (UTF-8)."""
    size = sum(len(s.encode("utf-8", "surrogatepass")) for s in stop)
    if size > max_bytes:
        raise invalid(
            "stop",
            f"the stop strings total {size} bytes, more than the limit of {max_bytes} (RNNLM_MAX_STOP_BYTES)",
        )


class StallBoundedEventSource(EventSourceResponse):
    """An :class:`EventSourceResponse` that ends the stream, with one log line and ``on_stall``
    (a metric), when sending one event stays blocked for ``stall_s`` (the client reads nothing).

    Closing the events' iterator leaves its ``async with stream``, which frees the generation's
    rows; returning frees the request's slot. The connection is closed; the client, which was
    not reading, gets no final event.
    """

    def __init__(
        self,
        content: AsyncIterator[dict],
        *,
        ping: float,
        stall_s: float | None,
        on_stall: Callable[[], None],
    ) -> None:
        super().__init__(content, ping=ping, send_timeout=stall_s or None)
        self._on_stall = on_stall

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except SendTimeoutError:
            log.warning(
                "stream ended: its client read nothing for %g s (RNNLM_STREAM_STALL_S)", self.send_timeout
            )
            self._on_stall()
