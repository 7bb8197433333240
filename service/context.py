"""Request ids and the access log: every request gets an id, every log line and error body carries it.

::

    X-Request-ID: abc-123 ─▶ kept (if it is 1..128 of ``A-Z a-z 0-9 . _ : -``), else a new uuid4 hex
                             │
        contextvar ◀─────────┤  read by the log formatter (service/logs.py) and the error shape
        response header ◀────┘  ``X-Request-ID`` on every answer, errors and streams included

The access log line (logger ``rnnlm.access``) has the method, route path, status, duration and
bytes sent: never the body or the query string, so request text stays out of the logs unless
``RNNLM_LOG_REQUEST_TEXT`` asks for its first characters.
"""

from __future__ import annotations

import contextvars
import logging
import re
import time
import uuid

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = "X-Request-ID"
LOGGED_TEXT_CHARS = 2000
_VALID_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("rnnlm_request_id", default=None)
access_log = logging.getLogger("rnnlm.access")


def current_request_id() -> str | None:
    """The id of the request being answered (None outside a request)."""
    return _request_id.get()


def request_id_from(headers: Headers) -> str:
    given = headers.get(HEADER.lower(), "")
    return given if _VALID_ID.match(given) else uuid.uuid4().hex


class RequestContextMiddleware:
    """Outermost middleware: sets the request id, adds its header, writes the access log line."""

    def __init__(self, app: ASGIApp, log_request_text: bool = False) -> None:
        self.app = app
        self.log_request_text = log_request_text

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id_from(Headers(scope=scope))
        token = _request_id.set(rid)
        scope.setdefault("state", {})["request_id"] = rid
        start = time.perf_counter()
        status, sent = 0, 0
        body = bytearray()

        async def send_with_id(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[HEADER] = rid
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        async def receive_and_keep() -> Message:
            message = await receive()
            if len(body) < LOGGED_TEXT_CHARS * 4:
                body.extend(message.get("body", b"")[: LOGGED_TEXT_CHARS * 4 - len(body)])
            return message

        outcome = "ok"
        try:
            await self.app(scope, receive_and_keep if self.log_request_text else receive, send_with_id)
        except BaseException:
            outcome = "error"
            raise
        finally:
            fields = {
                "method": scope["method"],
                "path": scope["path"],
                "status": status or None,
                "duration_ms": round((time.perf_counter() - start) * 1000, 2),
                "bytes_sent": sent,
            }
            if outcome != "ok" or not status:
                fields["outcome"] = outcome if outcome != "ok" else "no_response"
            if self.log_request_text:
                fields["request_text"] = body.decode("utf-8", "replace")[:LOGGED_TEXT_CHARS]
            access_log.info("request", extra={"fields": fields})
            _request_id.reset(token)
