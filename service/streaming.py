"""What a streamed sample may show so far, when stop strings can still match; and the SSE
response that ends a stream whose client stopped reading.

A token is streamed the moment it is generated, but its text may be the start of a stop string
(stop ``"。\\n"``: a ``。`` might be followed by ``\\n``). Such text is held back until it is ruled
out, so a client that appends each event's ``text`` ends with exactly the final, trimmed text::

    stop = ["END"]     token  text so far   shown   held back
                       "E"    "abE"         ""      "E"       (could start "END")
                       "x"    "abEx"        "Ex"    ""        (ruled out)
                       "E"    "abExE"       ""      "E"
                       "N"    "abExEN"      ""      "EN"
                       "D"    "abExEND"     ""      -         stop: final text "abEx"

The engine works this out on its worker (``ShownTokenEvent.shown``, model.inference.engine.decode);
:class:`StreamedText` is the same rule for callers that only have the pieces. Both follow the
stop strings incrementally (:class:`model.inference.sampling.StopMatcher`): the work per token does not
grow with the stop strings' length.

Backpressure: a client that does not read fills its connection's buffers, so sending an event
blocks; the route then takes no more events and the engine pauses the generation
(``GenerationStream.max_backlog``). :class:`StallBoundedEventSource` ends a stream whose send
has been blocked for ``RNNLM_STREAM_STALL_S``: its generation is cancelled and its slot freed.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from sse_starlette import EventSourceResponse
from sse_starlette.sse import SendTimeoutError
from starlette.types import Receive, Scope, Send

from model.inference.sampling import StopMatcher, StoppingCriteria
from model.text.tokenizer import append_piece

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


@dataclass
class StreamedText:
    stop: list[str]
    joiner: str = ""  # between pieces: "" for characters, " " for words (the tokenizer's joiner)
    text: str = ""  # everything generated so far
    shown: int = 0  # characters of ``text`` already sent
    final: str | None = field(default=None)  # the trimmed text, once finished
    _criteria: StoppingCriteria = field(init=False, repr=False)
    _matcher: StopMatcher = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._criteria = StoppingCriteria(0, self.stop)
        self._matcher = self._criteria.matcher()
        self._matcher.feed(self.text)

    def push(self, piece: str, finish_reason: str | None) -> str:
        """Add one token's text; return the text that is now safe to send."""
        before = len(self.text)
        self.text = append_piece(self.text, piece, self.joiner)
        self._matcher.feed(self.text[before:])
        if finish_reason is not None:
            self.final = self._criteria.trim(self.text)
            safe = len(self.final)
        else:
            safe = self.safe_length()
        delta = self.text[self.shown : max(safe, self.shown)]
        self.shown = max(safe, self.shown)
        return delta

    def safe_length(self) -> int:
        """Length of the prefix of ``text`` that no stop string can still claim."""
        return self._matcher.safe_length()


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
