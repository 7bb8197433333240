"""Prometheus metrics: request counts, latencies and in-flight requests per endpoint, tokens scored
and generated per model. Each app has its own registry, so several apps (tests) never collide.

The middleware is plain ASGI, not ``BaseHTTPMiddleware``: it times a streamed response until its
last byte, and the endpoint label is the route's path (or ``other``), never the raw URL, so the
number of series stays bounded whatever clients send.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("rnnlm_requests", "HTTP requests answered",
                                ["endpoint", "method", "status"], registry=r)
        self.latency = Histogram("rnnlm_request_duration_seconds",
                                 "Time from request to the last byte of the response",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge("rnnlm_requests_in_flight", "Requests being answered now (streams included)",
                               ["endpoint"], registry=r)
        self.tokens_scored = Counter("rnnlm_tokens_scored", "Tokens whose log-prob /score returned",
                                     ["model"], registry=r)
        self.tokens_generated = Counter("rnnlm_tokens_generated", "Tokens /generate produced",
                                        ["model"], registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)


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
            self.metrics.requests.labels(endpoint, scope["method"], str(status)).inc()
