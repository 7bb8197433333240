"""Configured limits: one marker on a schema field drives both the 413 check and the OpenAPI schema.

A request field declares which setting bounds it::

    candidates: list[str] = Field(..., json_schema_extra=limit("max_candidates"))

:func:`check_limits` measures the field (a list by its length, a number by its value) against
that setting, and every string in the body against ``max_text_chars``; past a limit the request
gets 413 naming the field (:class:`BodyLimitMiddleware` does the same for the body's size, before
it is parsed). :func:`document_limits` writes the values in force into the OpenAPI
schema (``maxItems``/``maximum``/``maxLength``), so /docs shows what the server will accept.
Validity bounds that never change (``top_k >= 1``, ``0 <= top_p <= 1``) stay plain pydantic
``Field`` bounds and answer 422.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import re
from typing import Any

from pydantic import BaseModel
from pydantic.config import JsonDict
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import ApiError, error_response, invalid, too_large
from .settings import Settings

LIMIT_KEY = "x-rnnlm-limit"
CHARS_PER_KEY = "x-rnnlm-chars-per"  # a string field bounded by a setting: characters per unit of it
TEXT_LIMIT = "max_text_chars"
_SURROGATE = re.compile("[\ud800-\udfff]")


def limit(setting: str, chars_per: int | None = None) -> JsonDict:
    """``json_schema_extra`` for a field bounded by the named setting. ``chars_per``: a string field
    (a lattice's text) may hold that many characters per unit of the setting, instead of
    ``max_text_chars``."""
    if setting not in Settings.model_fields:
        raise ValueError(f"no setting named {setting!r}")
    return {LIMIT_KEY: setting} if chars_per is None else {LIMIT_KEY: setting, CHARS_PER_KEY: chars_per}


def env_name(setting: str) -> str:
    return f"RNNLM_{setting.upper()}"


def check_limits(body: BaseModel, settings: Settings) -> None:
    """Raise 413 for the first field of ``body`` past its configured limit.

    A default the client did not set (``max_new_tokens=50``) is lowered to a smaller limit instead.
    """
    for name, info in type(body).model_fields.items():
        value = getattr(body, name)
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        setting = extra.get(LIMIT_KEY)
        if isinstance(setting, str):  # a setting's name, put there by limit()
            cap = getattr(settings, setting)
            if isinstance(value, list) and len(value) > cap:
                raise too_large(
                    name, f"{len(value)} items is more than the limit of {cap} ({env_name(setting)})"
                )
            if isinstance(value, int | float) and not isinstance(value, bool) and value > cap:
                if name not in body.model_fields_set:  # a default past the limit is lowered to it
                    setattr(body, name, cap)
                else:
                    raise too_large(
                        name, f"{shown(value)} is more than the limit of {cap} ({env_name(setting)})"
                    )
        chars_per = extra.get(CHARS_PER_KEY)
        for path, text in _strings(name, value):
            if isinstance(setting, str) and isinstance(chars_per, int):  # a long text of its own kind
                cap = chars_per * getattr(settings, setting)
                if len(text) > cap:
                    raise too_large(
                        path,
                        f"{len(text)} characters is more than the limit of {cap} ({chars_per} per unit of "
                        f"{env_name(setting)})",
                    )
            elif len(text) > settings.max_text_chars:
                raise too_large(
                    path,
                    f"{len(text)} characters is more than the limit of "
                    f"{settings.max_text_chars} ({env_name(TEXT_LIMIT)})",
                )
            if _SURROGATE.search(text):  # JSON allows "\ud800"; it is not text and cannot be echoed
                raise invalid(path, "contains an unpaired surrogate (\\ud800-\\udfff); send valid Unicode")


MAX_SHOWN_CHARS = 20  # of a number echoed in a message: a 4,000-digit top_k is not sent back whole


def shown(value: float) -> str:
    """A number as an error message may echo it: short ones whole, long ones by their size."""
    text = str(value)
    return text if len(text) <= MAX_SHOWN_CHARS else f"a number of {len(text)} characters"


def _strings(path: str, value: Any):
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _strings(f"{path}.{i}", item)


def document_limits(openapi: dict, settings: Settings) -> dict:
    """Write the configured limits into the request schemas of an OpenAPI document (in place)."""
    schemas = openapi.get("components", {}).get("schemas", {})
    for name, schema in schemas.items():
        if not name.endswith("Request"):
            continue
        for prop in schema.get("properties", {}).values():
            setting = prop.get(LIMIT_KEY)
            chars_per = prop.get(CHARS_PER_KEY)
            if setting is not None:
                cap = getattr(settings, setting)
                for branch in _branches(prop):
                    if branch.get("type") == "array":
                        branch["maxItems"] = cap
                    elif branch.get("type") in ("integer", "number"):
                        branch["maximum"] = cap
                    elif branch.get("type") == "string" and chars_per is not None:
                        branch["maxLength"] = cap * chars_per
                prop["description"] = (
                    prop.get("description", "") + f" Limit: {cap} ({env_name(setting)}); past it: 413."
                ).strip()
            if chars_per is None:
                _cap_strings(prop, settings.max_text_chars)
    return openapi


def _branches(schema: dict) -> list[dict]:
    return [schema, *schema.get("anyOf", []), *schema.get("oneOf", [])]


def _cap_strings(schema: dict, max_chars: int) -> None:
    for branch in _branches(schema):
        if branch.get("type") == "string" and "enum" not in branch:
            branch["maxLength"] = min(branch.get("maxLength", max_chars), max_chars)
        if isinstance(branch.get("items"), dict):
            _cap_strings(branch["items"], max_chars)
        for item in branch.get("prefixItems", []):  # a tuple's members ([word, score])
            _cap_strings(item, max_chars)


class BodyTooLarge(StarletteHTTPException):
    def __init__(self) -> None:
        super().__init__(413, "request body is larger than the configured limit")


class BodyError(ApiError, StarletteHTTPException):  # type: ignore[misc]  # both hold the same headers
    """An error found while the body is read: an HTTPException, so FastAPI re-raises it from its
    body parsing, and an ApiError first (MRO), so it is answered in the one error shape. Its answer
    closes the connection, which frees what the connection buffered."""

    def __init__(self, status: int, type: str, message: str, headers: dict[str, str]) -> None:
        headers = {**headers, "Connection": "close"}
        StarletteHTTPException.__init__(self, status, message, headers)
        ApiError.__init__(self, status, type, message, "body", headers)


class BodyTimeout(BodyError):
    """408: the body stopped arriving."""

    def __init__(self, timeout_s: float) -> None:
        message = (
            f"`body`: no byte of the request body arrived for {timeout_s:g} s ({env_name('body_timeout_s')})"
        )
        super().__init__(408, "timeout", message, {})


class BodyBudgetExceeded(BodyError):
    """503: the bodies being received or handled on all connections already hold the global bound."""

    def __init__(self, limit: int) -> None:
        super().__init__(503, "overloaded", body_budget_message(limit), {"Retry-After": "1"})


class BodyBudget:
    """Bytes of request bodies held across all connections: reserved when a request declares (or
    sends) them, given back when its answer is done. One event loop uses it: no lock."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self.peak = 0  # the most held at once, since the last trim

    def take(self, n: int) -> bool:
        if self.held + n > self.limit:
            return False
        self.held += n
        self.peak = max(self.peak, self.held)
        return True

    def give(self, n: int) -> None:
        self.held -= n
        if self.held == 0 and self.peak >= TRIM_AFTER_BYTES:
            self.peak = 0
            release_freed_memory()


TRIM_AFTER_BYTES = 16 * 1024 * 1024  # bodies this large held at once, then none: return the memory


def release_freed_memory() -> None:
    """Hand freed heap pages back to the OS (glibc keeps them in its arenas otherwise)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim  # noqa: B018  (glibc only)
    except (OSError, AttributeError):
        return None
    return libc


class BodyLimitMiddleware:
    """Bounds on request bodies, before and while they are read:

    - 413 past ``max_body_bytes``: at once from Content-Length, or while the body streams in;
    - 503 + ``Retry-After`` when the body would take the bytes held by all requests' bodies past
      ``max_buffered_body_bytes`` (declared lengths are reserved up front, chunked ones as they come);
    - 408 when no byte of the body arrives for ``body_timeout_s``.

    Past a bound the connection is closed (``Connection: close``), so what it buffered is freed.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        body_timeout_s: float | None = None,
        max_buffered_body_bytes: int | None = None,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s
        self.budget = BodyBudget(max_buffered_body_bytes) if max_buffered_body_bytes else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            response = error_response(
                413,
                "payload_too_large",
                body_too_large_message(self.max_body_bytes),
                "body",
                {"Connection": "close"},
            )
            await response(scope, receive, send)
            return
        budget = self.budget
        reserved = int(declared) if declared.isdigit() else 0
        if budget is not None and reserved and not budget.take(reserved):
            refused = BodyBudgetExceeded(budget.limit)
            response = error_response(503, refused.type, refused.message, refused.field, refused.headers)
            await response(scope, receive, send)
            return
        received = 0
        complete = False

        async def counting_receive() -> Message:
            nonlocal received, reserved, complete
            if complete:  # the body is in: what follows is a wait for the disconnect, never timed
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.body_timeout_s)
            except TimeoutError:
                raise BodyTimeout(self.body_timeout_s or 0) from None
            received += len(message.get("body", b""))
            complete = not message.get("more_body", False)
            if received > self.max_body_bytes:
                raise BodyTooLarge()  # routes re-raise HTTP errors: the error handler answers 413
            if budget is not None and received > reserved:  # chunked: reserve as it comes
                if not budget.take(received - reserved):
                    raise BodyBudgetExceeded(budget.limit)
                reserved = received
            return message

        try:
            await self.app(scope, counting_receive, send)
        finally:
            if budget is not None and reserved:
                budget.give(reserved)


class FramingMiddleware:
    """400 for a request with both Content-Length and Transfer-Encoding (RFC 9112 6.3): a proxy in
    front and this server could disagree on where its body ends, which is how requests are smuggled
    behind proxies. The connection is closed, since its framing cannot be trusted."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            names = {name.lower() for name, _ in scope["headers"]}
            if b"content-length" in names and b"transfer-encoding" in names:
                response = error_response(
                    400,
                    "invalid_request",
                    "`headers`: both Content-Length and Transfer-Encoding are set; send one of them",
                    None,
                    {"Connection": "close"},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def body_budget_message(limit: int) -> str:
    return (
        f"`body`: the request bodies being received already hold the limit of {limit} bytes "
        f"({env_name('max_buffered_body_bytes')}); retry later"
    )


def body_too_large_message(max_body_bytes: int) -> str:
    return (
        f"`body`: request body is larger than the limit of {max_body_bytes} bytes "
        f"({env_name('max_body_bytes')})"
    )
