"""Ends the work nobody waits for: at a request's deadline, when its client goes away, and when a
graceful shutdown's grace period runs out.

::

    request ─▶ RequestGuard ─▶ app (in a child task)
                 │ waits for the first of:
                 │   the app finishing ─────────────▶ its response, untouched
                 │   the client disconnecting ──────▶ cancel the app at once (its slot, queue place and
                 │                                    generation are freed; nothing is sent)
                 │   RNNLM_REQUEST_TIMEOUT_S ───────▶ cancel; 504 timeout, or on a stream that has
                 │                                    started, a final ``event: error`` with the same shape
                 │                                    (sent within FINAL_EVENT_TIMEOUT_S, else closed)
                 │   shutdown + RNNLM_SHUTDOWN_GRACE_S ▶ cancel; 503 shutting_down (or the final event)
                 ▼
    during shutdown, new requests get 503 shutting_down at once (/health still answers)

Cancelling the app cancels the route's ``await``: a request still queued for the model's worker
is dropped before it runs (the runner's future, or the engine's queue entry, is withdrawn).

The guard reads the request body as the app asks for it; once the body is complete, it alone
listens for ``http.disconnect`` and hands it on to the app (sse-starlette listens too).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import ErrorDetail, ErrorResponse, error_response, retry_after

log = logging.getLogger("rnnlm.service")
CLIENT_CLOSED = 499  # nginx's status for "the client closed the connection before the answer"
FINAL_EVENT_TIMEOUT_S = 5.0  # a started stream's final error event waits this long for a client that
# does not read; then the guard returns and uvicorn closes the connection


class Drain:
    """The shutdown state: set once, from uvicorn's signal handler, by :meth:`begin_threadsafe`."""

    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self.deadline: float | None = None  # time.monotonic() when unfinished work is ended
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Called in the lifespan: the loop whose requests this drain ends."""
        self._loop = loop
        self._event = asyncio.Event()

    @property
    def draining(self) -> bool:
        return self.deadline is not None

    def begin(self) -> None:
        """Start draining now (on the event loop)."""
        if self.deadline is None:
            self.deadline = time.monotonic() + self.grace_s
            log.info("shutting down: %.1f s for in-flight requests and streams to finish", self.grace_s)
        if self._event is not None:
            self._event.set()

    def begin_threadsafe(self) -> None:
        """Start draining from a signal handler or another thread."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.begin)
        else:
            self.begin()

    async def wait(self) -> None:
        if self._event is None:  # never bound (no lifespan): never drains
            await asyncio.Event().wait()
        else:
            await self._event.wait()


class _Exchange:
    """What has been sent so far, as seen by the guard."""

    def __init__(self) -> None:
        self.started = False
        self.streaming = False
        self.finished = False


def _sse_error(type_: str, status: int, message: str) -> bytes:
    body = ErrorResponse(error=ErrorDetail(type=type_, message=message, status=status))
    return f"event: error\r\ndata: {json.dumps(body.model_dump())}\r\n\r\n".encode()


class RequestGuardMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        drain: Drain,
        timeout_s: float,
        guarded_paths: set[str],
        always_open: frozenset[str] = frozenset({"/health", "/metrics"}),
        on_end: Callable[[str], None] | None = None,
        final_event_timeout_s: float = FINAL_EVENT_TIMEOUT_S,
    ) -> None:
        self.app = app
        self.final_event_timeout_s = final_event_timeout_s
        self.drain = drain
        self.timeout_s = timeout_s or None
        self.guarded_paths = guarded_paths
        self.always_open = always_open
        self.on_end = on_end  # counts each ended request by reason (metrics)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if self.drain.draining and path not in self.always_open:
            self._count("shutting_down")
            response = error_response(
                503,
                "shutting_down",
                "the server is shutting down; retry on another instance",
                headers={**retry_after(5), "Connection": "close"},
            )
            await response(scope, receive, send)
            return
        if path not in self.guarded_paths:
            await self.app(scope, receive, send)
            return
        await self._guarded(scope, receive, send)

    def _count(self, reason: str) -> None:
        if self.on_end is not None:
            self.on_end(reason)

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        exchange = _Exchange()
        body_done = asyncio.Event()
        client_gone = asyncio.Event()

        async def guarded_receive() -> Message:
            if body_done.is_set():  # the body is in: only a disconnect can come, and the watcher gets it
                await client_gone.wait()
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.disconnect":
                client_gone.set()
            elif not message.get("more_body", False):
                body_done.set()
            return message

        async def guarded_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                exchange.started = True
                headers = dict(message.get("headers", []))
                exchange.streaming = headers.get(b"content-type", b"").startswith(b"text/event-stream")
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                exchange.finished = True
            await send(message)

        async def watch_disconnect() -> None:
            await body_done.wait()
            while (await receive())["type"] != "http.disconnect":
                pass
            client_gone.set()

        app_task = asyncio.ensure_future(self.app(scope, guarded_receive, guarded_send))
        gone = asyncio.ensure_future(client_gone.wait())
        watcher = asyncio.ensure_future(watch_disconnect())
        draining = asyncio.ensure_future(self.drain.wait())
        deadline = None if self.timeout_s is None else time.monotonic() + self.timeout_s
        try:
            reason = await self._first_event(app_task, gone, draining, deadline, exchange)
            if reason is None:
                if app_task.cancelled() or not isinstance(app_task.exception(), ClientDisconnect):
                    app_task.result()  # the app's own outcome, exceptions included
                    return
                reason = "disconnected"  # the app met the disconnect first (reading the body)
            else:
                app_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await app_task
            await self._end(reason, exchange, scope, send)
        finally:
            for task in (gone, watcher, draining):
                task.cancel()
            if not app_task.done():  # the guard itself was cancelled (a hard shutdown)
                app_task.cancel()

    async def _first_event(
        self,
        app_task: asyncio.Future,
        gone: asyncio.Future,
        draining: asyncio.Future,
        deadline: float | None,
        exchange: _Exchange,
    ) -> str | None:
        """None when the app finished by itself, else why it must be ended."""
        waiting = {app_task, gone, draining}
        while True:
            ends = [d for d in (deadline, self.drain.deadline) if d is not None]
            timeout = max(0.0, min(ends) - time.monotonic()) if ends else None
            done, _ = await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if app_task in done:
                return None
            if gone in done:
                if exchange.finished:  # the answer is out; only the app's clean-up is left
                    await asyncio.wait([app_task])
                    return None
                return "disconnected"
            if draining in done:  # shutdown began: from now on its deadline counts
                waiting.discard(draining)
            now = time.monotonic()
            if self.drain.deadline is not None and now >= self.drain.deadline:
                return "shutting_down"
            if deadline is not None and now >= deadline:
                return "timeout"

    async def _end(self, reason: str, exchange: _Exchange, scope: Scope, send: Send) -> None:
        self._count(reason)
        if reason == "disconnected":
            log.info("client went away; request cancelled")
            if not exchange.started:  # nobody reads it (uvicorn drops it): it is for the metrics and
                # the access log, which would otherwise count a request without an answer as a 500
                await send({"type": "http.response.start", "status": CLIENT_CLOSED, "headers": []})
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        if reason == "timeout":
            status, message = (
                504,
                f"the request did not finish within {self.timeout_s:g} s (RNNLM_REQUEST_TIMEOUT_S)",
            )
        else:
            status, message = 503, "the server is shutting down and ended this request"
        log.warning("request ended: %s", reason)
        if not exchange.started:
            headers = {"Connection": "close"} if reason == "shutting_down" else {}
            if status == 503:
                headers.update(retry_after(5))
            response = error_response(status, reason, message, headers=headers)
            await response(scope, _no_receive, send)
        elif exchange.streaming and not exchange.finished:
            final = {
                "type": "http.response.body",
                "body": _sse_error(reason, status, message),
                "more_body": False,
            }
            try:  # bounded: a client that reads nothing would hold the send (and this task) for ever
                await asyncio.wait_for(send(final), self.final_event_timeout_s)
            except TimeoutError:
                log.info(
                    "final error event not read within %g s; connection closed", self.final_event_timeout_s
                )
            except Exception:  # the client may be gone by now
                pass


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}
