"""Admission control: bounded work per model, answered at once when full.

::

    POST /score ─▶ admit ──(model's slots < RNNLM_MAX_IN_FLIGHT, streams < RNNLM_MAX_STREAMS)──▶ route
                     │                                                                           │
                     └─ full: 503 overloaded + Retry-After, at once        slot held until the last byte
                                                                           (a stream: until it ends or
                                                                            the client goes away)

A slot covers a request from admission to its last byte, queued or running, so the latency of
an admitted request is bounded by ``max_in_flight`` requests ahead of it instead of growing with
the load. ``Retry-After`` is the mean time a request of that model held its slot lately (at
least 1 s). The batching engine keeps its own bounded queue as well; its ``Overloaded`` answers
the same way (service/errors.py).

Admission runs as a router dependency, after the body is parsed (it reads ``model`` and
``stream`` from it) and before the route; it counts the work of every model route alike.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Iterator

from fastapi import Request
from prometheus_client import Counter, Gauge

from .errors import overloaded
from .metrics import ServiceMetrics

EWMA_WEIGHT = 0.1  # weight of the newest request in the running mean hold time


class Admission:
    """Slots per model and for open streams. Used on the event loop only, so no locks."""

    def __init__(self, max_in_flight: int, max_streams: int, metrics: ServiceMetrics) -> None:
        self.max_in_flight = max_in_flight
        self.max_streams = max_streams
        self.in_flight: dict[str, int] = {}
        self.streams = 0
        self.mean_hold_s: dict[str, float] = {}
        self.rejected = Counter(
            "rnnlm_rejected",
            "Requests refused or ended early by the service",
            ["reason"],
            registry=metrics.registry,
        )
        self.admitted = Gauge(
            "rnnlm_admitted",
            "Requests holding a slot now (running or queued)",
            ["model"],
            registry=metrics.registry,
        )
        self.open_streams = Gauge("rnnlm_streams_open", "Open /generate streams", registry=metrics.registry)

    def retry_after_s(self, model: str) -> float:
        return max(1.0, self.mean_hold_s.get(model, 1.0))

    @contextlib.contextmanager
    def slot(self, model: str, stream: bool) -> Iterator[None]:
        """Hold one of ``model``'s slots (and a stream slot) for the ``with`` block, or raise 503."""
        if self.in_flight.get(model, 0) >= self.max_in_flight:
            self.rejected.labels("overloaded").inc()
            raise overloaded(
                f"model {model!r} is busy: {self.max_in_flight} requests are already "
                "running or queued (RNNLM_MAX_IN_FLIGHT); retry later",
                self.retry_after_s(model),
            )
        if stream and self.streams >= self.max_streams:
            self.rejected.labels("streams").inc()
            raise overloaded(
                f"`stream`: {self.max_streams} streams are already open "
                "(RNNLM_MAX_STREAMS); retry later, or ask without streaming",
                self.retry_after_s(model),
                field="stream",
            )
        self.in_flight[model] = self.in_flight.get(model, 0) + 1
        self.admitted.labels(model).inc()
        if stream:
            self.streams += 1
            self.open_streams.inc()
        start = time.monotonic()
        try:
            yield
        finally:
            self.in_flight[model] -= 1
            self.admitted.labels(model).dec()
            if stream:
                self.streams -= 1
                self.open_streams.dec()
            else:
                held = time.monotonic() - start
                mean = self.mean_hold_s.get(model, held)
                self.mean_hold_s[model] = (1 - EWMA_WEIGHT) * mean + EWMA_WEIGHT * held


async def admit(request: Request) -> AsyncIterator[None]:
    """Router dependency: hold a slot of the request's model from here to its last byte."""
    admission: Admission = request.app.state.admission
    body = await _parsed_body(request)
    registry = getattr(request.app.state, "registry", None)
    name = body.get("model")
    if registry is None:
        model = "-"  # not ready: the route answers 503 itself
    elif isinstance(name, str) and name in registry.runners:
        model = name
    else:
        model = registry.default  # none named; an unknown name gets its 404 from the route at once
    stream = body.get("stream") is True
    with admission.slot(model, stream):
        yield


async def _parsed_body(request: Request) -> dict:
    """The JSON body FastAPI has already parsed (cached on the request), or {} if there is none."""
    try:
        body = await request.json()
    except Exception:  # not JSON: validation answers 422; admission counts it as the default model's
        return {}
    return body if isinstance(body, dict) else {}
