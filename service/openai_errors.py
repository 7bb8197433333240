"""OpenAI's error shape under /v1: the service's errors, as OpenAI's clients read them.

Every error is made once, in the one shape of service/errors.py; under ``/v1/`` this middleware
(outside authentication, the guard and the body limit, so it sees their answers too) renames its
fields the way OpenAI's API names them::

    {"error": {"type": "invalid_request", "message": "`n`: ...", "field": "n", "status": 422, "request_id": "…"}}
    ▼
    {"error": {"message": "`n`: ...", "type": "invalid_request_error", "param": "n", "code": "invalid_request",
               "status": 400, "request_id": "…"}}

``type`` becomes OpenAI's kind (``invalid_request_error`` for every 4xx, ``server_error`` for 5xx),
``code`` keeps ours, ``param`` is the field. An invalid request is 400 there (as in OpenAI's API and
vLLM), not 422; every other status, header and the request id stay as they were.
"""

from __future__ import annotations

import json

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PREFIX = "/v1/"


def openai_error(
    status: int, code: str, message: str, param: str | None = None, request_id: str | None = None
) -> dict:
    """An error body in OpenAI's shape (with our ``status`` and ``request_id`` beside its fields)."""
    return {
        "error": {
            "message": message,
            "type": "invalid_request_error" if status < 500 else "server_error",
            "param": param,
            "code": code,
            "status": status,
            "request_id": request_id,
        }
    }


def reshape(status: int, body: bytes) -> tuple[int, bytes]:
    """Our error body as OpenAI's (422 becomes 400); anything else is returned as it was."""
    try:
        error = json.loads(body)["error"]
        code, message = error["type"], error["message"]
    except (ValueError, KeyError, TypeError):
        return status, body
    status = 400 if status == 422 else status
    out = openai_error(status, code, message, error.get("field"), error.get("request_id"))
    return status, json.dumps(out, ensure_ascii=False).encode()


class OpenAIErrorsMiddleware:
    """Rewrites JSON error answers (status >= 400) of the paths under ``/v1/``."""

    def __init__(self, app: ASGIApp, prefix: str = PREFIX) -> None:
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        held: Message | None = None  # the start of an error answer, sent once its body is rewritten
        chunks: list[bytes] = []

        async def send_reshaped(message: Message) -> None:
            nonlocal held
            if message["type"] == "http.response.start":
                content_type = MutableHeaders(scope=message).get("content-type", "")
                if message["status"] >= 400 and content_type.startswith("application/json"):
                    held = message
                    return
            elif message["type"] == "http.response.body" and held is not None:
                chunks.append(message.get("body", b""))
                if message.get("more_body", False):
                    return
                status, body = reshape(held["status"], b"".join(chunks))
                headers = MutableHeaders(scope=held)
                headers["content-length"] = str(len(body))
                await send({**held, "status": status, "headers": headers.raw})
                await send({"type": "http.response.body", "body": body})
                return
            await send(message)

        await self.app(scope, receive, send_reshaped)
