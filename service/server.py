"""The HTTP server around the app: uvicorn's h11 protocol with deadlines and a cap on connections.

uvicorn (0.54) has no header-read timeout: ``timeout_keep_alive`` runs only after a response and
is cancelled by any byte received, so a connection that sent nothing, half a request line or half
its headers stays open for ever, and ``limit_concurrency`` answers its 503 only once a whole
request has been parsed. Thousands of such connections exhaust the file descriptors; asyncio then
logs a traceback for every failed ``accept()``. This module closes those holes at the protocol
level (a subclass of uvicorn's ``H11Protocol``, passed as ``http=``), before any request exists::

    accept ─▶ cap: at RNNLM_MAX_CONNECTIONS, close the oldest idle connection, else 503 and close
       │
       ▼
    waiting for a request line + headers ── RNNLM_HEADER_TIMEOUT_S from the first byte ─▶ 408, close
       │ (headers complete: the app runs)
       ▼
    receiving the body ── no byte for RNNLM_BODY_TIMEOUT_S: the app answers 408 (service/limits.py);
       │                  a body nobody reads is closed 1 s later here
       ▼
    response sent ─▶ keep-alive (RNNLM_KEEP_ALIVE_S, uvicorn's) ─▶ next request: headers timed again

"Idle" connections (no request in progress: nothing sent yet, half-sent headers, or a kept-alive
connection between requests) are the ones a new connection may push out, oldest first, so a flood
of idle sockets cannot lock out a client that sends its request at once. Every closing is counted
in ``rnnlm_connections_closed_total{reason}``, and the warnings about them are rate-limited
(:class:`RateLimitedLog`), as are asyncio's "socket.accept() out of system resource" errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import resource
import socket
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import h11
from prometheus_client import CollectorRegistry, Counter, Gauge
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

log = logging.getLogger("rnnlm.service")

RESERVED_FDS = 128  # file descriptors kept for everything but client connections (models, logs, pipes)
BODY_BACKSTOP_S = 1.0  # the app answers a stalled body with 408 first; this closes one nobody reads
LOG_INTERVAL_S = 10.0  # at most one warning of a kind per interval; the rest are counted


def raise_nofile_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit; returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):  # some platforms refuse values above an OS maximum
            pass
    return soft


def connection_cap(requested: int, nofile: int) -> int:
    """The connections the server may hold: the setting, kept below the file-descriptor limit."""
    return max(1, min(requested, nofile - RESERVED_FDS))


@dataclass(frozen=True)
class ConnectionLimits:
    max_connections: int  # past it: the oldest idle connection is closed, else the new one (503)
    header_timeout_s: float  # from a request's first byte (or the connection) to its last header
    body_timeout_s: float  # longest pause while a body is being received
    send_buffer_bytes: int = 0  # each connection's kernel send buffer (0: the kernel's default, which
    # grows to megabytes on loopback: a stream whose client stops reading would never block, so its
    # generation would never pause; see service/streaming.py)


class RateLimitedLog:
    """Warnings that cannot flood: one line per kind per ``interval_s``, naming how many were held back."""

    def __init__(self, logger: logging.Logger, interval_s: float = LOG_INTERVAL_S) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def warning(self, kind: str, message: str) -> None:
        now = time.monotonic()
        last = self._last.get(kind)
        if last is not None and now - last < self.interval_s:
            self._held[kind] = self._held.get(kind, 0) + 1
            return
        held = self._held.pop(kind, 0)
        self._last[kind] = now
        suffix = f" ({held} more like it in the last {now - last:.0f} s)" if held and last is not None else ""
        self.logger.warning("%s%s", message, suffix)


class PerConnectionWarnings(logging.Filter):
    """uvicorn's warnings about one bad connection ("Invalid HTTP request received."), rate-limited: a
    client sending garbage on many connections cannot fill the log."""

    MESSAGES = frozenset({"Invalid HTTP request received.", "Exceeded concurrency limit."})

    def __init__(self, interval_s: float = LOG_INTERVAL_S) -> None:
        super().__init__()
        self.interval_s = interval_s
        self._last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg not in self.MESSAGES:
            return True
        now = time.monotonic()
        last = self._last.get(str(record.msg))
        if last is not None and now - last < self.interval_s:
            return False
        self._last[str(record.msg)] = now
        return True


class ConnectionTracker:
    """The open connections of one server: which are idle (oldest first), the counters, the log."""

    def __init__(self, limits: ConnectionLimits, registry: CollectorRegistry | None = None) -> None:
        self.limits = limits
        self.open = 0
        self.idle: OrderedDict[GuardedH11Protocol, None] = OrderedDict()
        self.log = RateLimitedLog(log)
        self.closed = Counter(
            "rnnlm_connections_closed",
            "Connections the server closed before they were done: refused (at the cap, no idle one to "
            "close), evicted (idle, closed for a new one), header_timeout, body_timeout, accept_failed",
            ["reason"],
            registry=registry,
        )
        self.gauge = Gauge("rnnlm_connections_open", "Open client connections", registry=registry)

    def admit(self, protocol: GuardedH11Protocol) -> bool:
        """Make room for a new connection: False when every open one is busy with a request."""
        if self.open >= self.limits.max_connections:
            if not self.idle:
                self.count(
                    "refused", f"connection refused: {self.open} open, all busy (RNNLM_MAX_CONNECTIONS)"
                )
                return False
            oldest, _ = self.idle.popitem(last=False)
            self.count(
                "evicted", f"idle connection closed for a new one: {self.open} open (RNNLM_MAX_CONNECTIONS)"
            )
            oldest.close_now()
        self.open += 1
        self.gauge.set(self.open)
        self.idle[protocol] = None
        return True

    def busy(self, protocol: GuardedH11Protocol) -> None:
        self.idle.pop(protocol, None)

    def waiting(self, protocol: GuardedH11Protocol) -> None:
        self.idle[protocol] = None
        self.idle.move_to_end(protocol)

    def gone(self, protocol: GuardedH11Protocol) -> None:
        self.idle.pop(protocol, None)
        self.open -= 1
        self.gauge.set(self.open)

    def count(self, reason: str, message: str) -> None:
        self.closed.labels(reason).inc()
        self.log.warning(reason, message)

    def exception_handler(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """The loop's exception handler: a failed ``accept()`` (out of file descriptors) is counted and
        logged at most once per interval, without a traceback; anything else goes to asyncio's own."""
        if str(context.get("message", "")).startswith("socket.accept()"):
            self.count("accept_failed", f"{context['message']}: {context.get('exception')!r}")
            return
        loop.default_exception_handler(context)


def _refusal(max_connections: int, request_id: str) -> bytes:
    """The whole answer to a connection past the cap, written before anything is parsed."""
    message = (
        f"too many open connections (the limit is {max_connections}, RNNLM_MAX_CONNECTIONS); retry later"
    )
    return _protocol_answer(
        "503 Service Unavailable", "overloaded", message, request_id, "retry-after: 1\r\n"
    )


def _timeout_answer(message: str, request_id: str) -> bytes:
    return _protocol_answer("408 Request Timeout", "timeout", message, request_id)


def _protocol_answer(
    status: str, type_: str, message: str, request_id: str, extra_headers: str = ""
) -> bytes:
    """An answer the protocol writes itself (no request reached the app): the one error shape, with a
    request id in the body and the ``X-Request-ID`` header, as every answer of the app has."""
    code = int(status.split()[0])
    error = {"type": type_, "message": message, "field": None, "status": code, "request_id": request_id}
    body = json.dumps({"error": error}).encode()
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n{extra_headers}x-request-id: {request_id}\r\n"
        f"connection: close\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


_SENT_REQUEST_ID = re.compile(rb"\r\nx-request-id:[ \t]*([A-Za-z0-9._:\-]{1,128})[ \t]*\r\n", re.IGNORECASE)


def protocol_request_id(received: bytes = b"") -> str:
    """The id of a request the protocol answers itself: the client's ``X-Request-ID`` if a whole,
    valid header line of it arrived (as service/context.py accepts it), else a new uuid4 hex."""
    found = _SENT_REQUEST_ID.search(received)
    return found.group(1).decode() if found else uuid.uuid4().hex


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with the cap, the header deadline and a backstop for unread bodies."""

    tracker: ConnectionTracker  # set by protocol_class()

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._deadline: asyncio.TimerHandle | None = None
        self._timer = ""  # which deadline is armed: header | body | "" (none)
        self._admitted = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if not self.tracker.admit(self):
            transport.write(_refusal(self.tracker.limits.max_connections, protocol_request_id()))
            transport.close()
            return
        self._admitted = True
        size = self.tracker.limits.send_buffer_bytes
        sock = transport.get_extra_info("socket")
        if size > 0 and sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
        self._arm("header", self.tracker.limits.header_timeout_s, self._header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._admitted:
            self._admitted = False
            self.tracker.gone(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return
        super().data_received(data)
        state = self.conn.their_state
        if state is h11.IDLE:  # no request in progress: the first bytes of one start its header clock
            if self.cycle is None or self.cycle.response_complete:
                self.tracker.waiting(self)
            if self._timer != "header":
                self._arm("header", self.tracker.limits.header_timeout_s, self._header_timeout)
        elif state is h11.SEND_BODY:  # a body is coming: each chunk restarts the stall clock
            self.tracker.busy(self)
            self._arm("body", self.tracker.limits.body_timeout_s + BODY_BACKSTOP_S, self._body_stalled)
        else:
            self.tracker.busy(self)
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self.tracker.waiting(self)  # kept alive: idle again until its next request

    def close_now(self) -> None:
        """Close an idle connection (to make room for a new one)."""
        self._disarm()
        self.transport.close()

    def _arm(self, kind: str, delay: float, callback: Callable[[], None]) -> None:
        self._disarm()
        self._timer = kind
        self._deadline = self.loop.call_later(delay, callback)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._timer = ""

    def _header_timeout(self) -> None:
        self._deadline, self._timer = None, ""
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        limit = self.tracker.limits.header_timeout_s
        received = bytes(self.conn.trailing_data[0])  # the part of a request line or headers received
        if received:
            message = (
                f"`headers`: the request line and headers did not arrive within {limit:g} s "
                "(RNNLM_HEADER_TIMEOUT_S)"
            )
            self.transport.write(_timeout_answer(message, protocol_request_id(received)))
        self.tracker.count(
            "header_timeout", f"connection closed: no complete request headers within {limit:g} s"
        )
        self.transport.close()

    def _body_stalled(self) -> None:
        self._deadline, self._timer = None, ""
        if self.transport.is_closing() or self.conn.their_state is not h11.SEND_BODY:
            return
        limit = self.tracker.limits.body_timeout_s
        self.tracker.count(
            "body_timeout", f"connection closed: its request body stalled for over {limit:g} s"
        )
        self.transport.close()


def protocol_class(tracker: ConnectionTracker) -> type[GuardedH11Protocol]:
    """The protocol class to pass to uvicorn as ``http=``, bound to one server's tracker."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"tracker": tracker})
