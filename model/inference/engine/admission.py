"""What an engine lets in: its queue bound and the cost of its score / next-token requests.

::

    request ─▶ refuse_too_costly     more tokens than max_request_tokens        TooCostly (any load)
            ─▶ admit                 engine stopped                             EngineStopped
                                     max_queue requests already waiting         Overloaded
            ─▶ reserve               its tokens do not fit max_tokens_in_flight  TokensInFlight
    answered, failed or withdrawn ─▶ release (once)

A request's cost is the tokens its pass computes (Σ sequence lengths); they count "in flight"
from admission until it is answered. Every refusal is counted in the engine's stats and told to
its observer, and an overload carries a Retry-After estimated from the recent passes
(:meth:`Admission.observe_request`, :meth:`Admission.observe_tokens`).

Not locked itself: the engine calls the ``*_locked`` methods under its own lock (the queue
lengths it passes are read under that lock too).
"""

from __future__ import annotations

import math
from typing import Protocol

from model.inference.engine.types import (
    EngineConfig,
    EngineObserver,
    EngineStats,
    EngineStopped,
    Overloaded,
    TokensInFlight,
    TooCostly,
)

MAX_RETRY_S = 60.0  # the longest Retry-After an overload suggests
MIN_RETRY_S = 1.0


class Costed(Protocol):
    """A request whose tokens count in flight while it is queued or running."""

    kind: str
    tokens: int
    released: bool  # its tokens no longer count in flight


def retry_after(waiting: float, secs_each: float) -> float:
    """Seconds to suggest before a retry: ``waiting`` things ahead at ``secs_each``, 1 to 60."""
    return min(MAX_RETRY_S, max(MIN_RETRY_S, math.ceil(waiting * secs_each)))


class Admission:
    """One engine's admission: the queue bound, the per-request and in-flight token bounds."""

    def __init__(self, config: EngineConfig, stats: EngineStats, observer: EngineObserver) -> None:
        self.max_queue = config.max_queue
        self.max_request_tokens = config.max_request_tokens
        self.max_tokens_in_flight = config.max_tokens_in_flight
        self.stats = stats
        self.observer = observer
        self.tokens_in_flight = 0  # cost of the one-shot requests queued or running
        self.secs_per_request = 0.01  # running estimate of a one-shot request's time, for Retry-After
        self.secs_per_token = 1e-4  # running estimate of a one-shot token's time, for Retry-After

    def refuse(self, kind: str, reason: str) -> None:
        """Count a refusal of a ``kind`` request (stats and observer)."""
        self.stats.kinds[kind].rejected += 1
        self.observer.on_rejected(kind, reason)

    def admit_locked(self, kind: str, queued: int, running: bool) -> None:
        """Raise :class:`EngineStopped` unless ``running``, :class:`Overloaded` when ``queued``
        requests (every kind) already wait."""
        if not running:
            self.refuse(kind, "stopped")
            raise EngineStopped("the engine is not running")
        if queued >= self.max_queue:
            self.refuse(kind, "overloaded")
            raise Overloaded(kind, queued, retry_after(queued, self.secs_per_request))

    def refuse_too_costly(self, kind: str, tokens: int) -> None:
        """:class:`TooCostly` for a request of more than ``max_request_tokens`` (needs no lock)."""
        limit = self.max_request_tokens
        if limit is not None and tokens > limit:
            self.refuse(kind, "too_costly")
            raise TooCostly(kind, tokens, limit)

    def refuse_in_flight_locked(self, kind: str, tokens: int) -> None:
        """:class:`TokensInFlight` when ``tokens`` more do not fit in flight now."""
        limit = self.max_tokens_in_flight
        if limit is not None and self.tokens_in_flight + tokens > limit:
            self.refuse(kind, "overloaded")
            retry = retry_after(self.tokens_in_flight, self.secs_per_token)
            raise TokensInFlight(kind, tokens, self.tokens_in_flight, limit, retry)

    def reserve_locked(self, item: Costed) -> None:
        """Count ``item``'s tokens in flight, or raise :class:`TokensInFlight` if they do not fit."""
        self.refuse_in_flight_locked(item.kind, item.tokens)
        self.tokens_in_flight += item.tokens

    def release_locked(self, item: Costed) -> None:
        """``item``'s tokens stop counting in flight (once)."""
        if not item.released:
            item.released = True
            self.tokens_in_flight -= item.tokens

    def observe_request(self, seconds: float) -> None:
        """A one-shot request took ``seconds`` (its share of its batch): the Retry-After estimate."""
        self.secs_per_request = 0.8 * self.secs_per_request + 0.2 * seconds

    def observe_tokens(self, seconds: float, tokens: int) -> None:
        """A pass of ``tokens`` took ``seconds``: the per-token Retry-After estimate."""
        self.secs_per_token = 0.8 * self.secs_per_token + 0.2 * seconds / max(1, tokens)
