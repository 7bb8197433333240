"""Prometheus metrics: request counts, latencies and in-flight requests per endpoint, tokens scored
and generated per model. Each app has its own registry, so several apps (tests) never collide.

The middleware is plain ASGI, not ``BaseHTTPMiddleware``: it times a streamed response until its
last byte, the endpoint label is the route's path (or ``other``), never the raw URL, and the
method label is one of ``KNOWN_METHODS`` (or ``other``), so the number of series stays bounded
whatever clients send, unauthenticated requests (401) included.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from model.inference.engine import EngineObserver

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
WAIT_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "rnnlm_requests", "HTTP requests answered", ["endpoint", "method", "status"], registry=r
        )
        self.latency = Histogram(
            "rnnlm_request_duration_seconds",
            "Time from request to the last byte of the response",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "rnnlm_requests_in_flight",
            "Requests being answered now (streams included)",
            ["endpoint"],
            registry=r,
        )
        self.tokens_scored = Counter(
            "rnnlm_tokens_scored", "Tokens whose log-prob /score returned", ["model"], registry=r
        )
        self.tokens_generated = Counter(
            "rnnlm_tokens_generated", "Tokens /generate produced", ["model"], registry=r
        )
        self.tokens_embedded = Counter(
            "rnnlm_tokens_embedded", "Tokens of the texts /embed read (without <bos>)", ["model"], registry=r
        )

        # batching: is it working under this traffic? (kind: score | next_token | generate | embed)
        self.batch_requests = Histogram(
            "rnnlm_batch_requests",
            "Requests served by one engine batch",
            ["kind"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.batch_rows = Histogram(
            "rnnlm_batch_rows",
            "Sequences in one engine batch (generate: rows advanced by one decoding step)",
            ["kind"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "rnnlm_queue_wait_seconds",
            "Time a request waited for its batch",
            ["kind"],
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        self.positions_computed = Counter(
            "rnnlm_positions_computed",
            "Token positions the model ran (prefix sharing computes each distinct prefix once)",
            registry=r,
        )
        self.positions_requested = Counter(
            "rnnlm_positions_requested",
            "Token positions the requests asked for (candidates scored in full)",
            registry=r,
        )
        self.prefix_cache_hits = Counter(
            "rnnlm_prefix_cache_hits",
            "Scored sequences and next-token texts that started from a cached prefix state",
            registry=r,
        )
        self.prefix_cache_misses = Counter(
            "rnnlm_prefix_cache_misses",
            "Scored sequences and next-token texts that found no cached prefix state",
            registry=r,
        )
        self.prefix_cache_evictions = Counter(
            "rnnlm_prefix_cache_evictions", "Prefix states dropped to keep the cache's byte bound", registry=r
        )
        self.prefix_cache_bytes = Gauge(
            "rnnlm_prefix_cache_bytes", "Bytes the prefix-state caches hold, all models together", registry=r
        )
        self.prefix_cache_entries = Gauge(
            "rnnlm_prefix_cache_entries", "Prefix states cached, all models together", registry=r
        )
        self.engine_rejected = Counter(
            "rnnlm_engine_rejected", "Requests the engine refused or dropped", ["kind", "reason"], registry=r
        )

    def engine_observer(self) -> EngineObserver:
        return _PrometheusObserver(self)

    def render(self) -> bytes:
        return generate_latest(self.registry)


# The method label: the methods the service answers (CORS preflights included); any other,
# e.g. one a client made up, counts as "other" instead of creating a series of its own.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "OPTIONS"})


def method_label(method: str) -> str:
    return method if method in KNOWN_METHODS else "other"


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: ServiceMetrics, route_paths: set[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.route_paths = route_paths

    def endpoint(self, path: str) -> str:
        if path in self.route_paths:
            return path
        return "/static" if path.startswith("/static/") else "other"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        endpoint = self.endpoint(scope["path"])
        status = 500  # unless a response starts
        start = time.perf_counter()
        scope.setdefault("state", {})["received_at"] = start  # where a Server-Timing header counts from

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        in_flight = self.metrics.in_flight.labels(endpoint)
        in_flight.inc()
        try:
            await self.app(scope, receive, send_and_record)
        finally:
            in_flight.dec()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - start)
            self.metrics.requests.labels(endpoint, method_label(scope["method"]), str(status)).inc()


class _PrometheusObserver(EngineObserver):
    """Engine hooks -> Prometheus (prometheus_client metrics are thread-safe)."""

    def __init__(self, metrics: ServiceMetrics) -> None:
        self.m = metrics

    def on_queue_wait(self, kind: str, seconds: float) -> None:
        self.m.queue_wait.labels(kind).observe(seconds)

    def on_batch(self, kind: str, requests: int, rows: int) -> None:
        self.m.batch_requests.labels(kind).observe(requests)
        self.m.batch_rows.labels(kind).observe(rows)

    def on_positions(self, computed: int, requested: int) -> None:
        self.m.positions_computed.inc(computed)
        self.m.positions_requested.inc(requested)

    def on_rejected(self, kind: str, reason: str) -> None:
        self.m.engine_rejected.labels(kind, reason).inc()

    def on_prefix_cache(
        self, hits: int, misses: int, evictions: int, bytes_delta: int, entries_delta: int
    ) -> None:
        self.m.prefix_cache_hits.inc(hits)
        self.m.prefix_cache_misses.inc(misses)
        self.m.prefix_cache_evictions.inc(evictions)
        self.m.prefix_cache_bytes.inc(bytes_delta)
        self.m.prefix_cache_entries.inc(entries_delta)
