"""One JSON shape for every error the service returns, whatever raised it::

    {"error": {"type": "invalid_request", "message": "`top_k`: Input should be greater than or
               equal to 1", "field": "top_k", "status": 422}}

=====  =======================  ===============================================================
400    invalid_request          both Content-Length and Transfer-Encoding (request smuggling; closed)
422    invalid_request          a field is missing, unknown, has the wrong type or is out of bounds
413    payload_too_large        body, text length, list length or a count past a configured limit
401    unauthorized             an API key is configured and the request has none, or a wrong one
404    not_found                unknown route (paths are exact: ``/score/`` is not ``/score``)
404    model_not_found          the ``model`` field names no served model
405    method_not_allowed       e.g. GET on a POST route
503    not_ready                models are still loading, or failed to load (``Retry-After``)
503    overloaded               the model's queue or the open streams are full (``Retry-After``)
503    shutting_down            the server is stopping (SIGTERM) and takes no new work
504    timeout                  the request passed its deadline (RNNLM_REQUEST_TIMEOUT_S)
500    internal_error           a bug; the message never carries internals, the log does
=====  =======================  ===============================================================

Every error body also carries the request's ``request_id`` (the ``X-Request-ID`` header), so a
client's report can be found in the server log; a 500 too, though Starlette answers it outside the
middleware that sets the id (:func:`_on_unexpected` reads it from the request's scope). The engine's own errors
(``Overloaded``, ``DeadlineExceeded``, ``EngineStopped``, …) become their 503 / 504 / 503 in the runner
(service/runner.py: ``refusal``), the one door from a route to an engine.
"""

from __future__ import annotations

import difflib
import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from .context import HEADER as REQUEST_ID_HEADER
from .context import current_request_id

log = logging.getLogger("rnnlm.service")


class ErrorDetail(BaseModel):
    type: str = Field(description="machine-readable kind, e.g. invalid_request, payload_too_large")
    message: str = Field(description="what went wrong, naming the field")
    field: str | None = Field(default=None, description="the offending field (dotted path), if any")
    status: int = Field(description="the HTTP status, repeated")
    request_id: str | None = Field(
        default_factory=current_request_id, description="the request's id (also the X-Request-ID header)"
    )


class ErrorResponse(BaseModel):
    error: ErrorDetail


class ApiError(Exception):
    """Raise anywhere in a request to answer with the error shape."""

    def __init__(
        self,
        status: int,
        type: str,
        message: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.type, self.message, self.field = status, type, message, field
        self.headers = headers


def invalid(field: str, message: str) -> ApiError:
    return ApiError(422, "invalid_request", f"`{field}`: {message}", field)


def too_large(field: str, message: str) -> ApiError:
    return ApiError(413, "payload_too_large", f"`{field}`: {message}", field)


def not_ready(reason: str = "models are still loading") -> ApiError:
    return ApiError(503, "not_ready", reason, headers={"Retry-After": "5"})


def retry_after(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, min(3600, math.ceil(seconds))))}


def overloaded(message: str, retry_after_s: float, field: str | None = None) -> ApiError:
    return ApiError(503, "overloaded", message, field, retry_after(retry_after_s))


def error_response(
    status: int,
    type: str,
    message: str,
    field: str | None = None,
    headers: dict[str, str] | None = None,
    request_id: str | None = None,
) -> JSONResponse:
    """The error shape; ``request_id`` defaults to the id of the request being answered."""
    detail = ErrorDetail(type=type, message=message, field=field, status=status)
    if request_id is not None:
        detail.request_id = request_id
    return JSONResponse(ErrorResponse(error=detail).model_dump(), status_code=status, headers=headers)


# Responses every route can give, for the OpenAPI schema.
ERROR_RESPONSES: dict[int | str, dict] = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in [
        (413, "Past a configured limit"),
        (422, "Invalid input"),
        (404, "Unknown model"),
        (503, "Not ready, overloaded or shutting down (with Retry-After)"),
        (504, "The request passed its deadline (RNNLM_REQUEST_TIMEOUT_S)"),
    ]
}


MAX_LISTED_FIELDS = 10  # other invalid fields named in a 422 message

# Names pydantic adds to a location for the branch of a union (``text: str | list[str]``).
_UNION_TAGS = {"str", "int", "float", "bool", "bytes", "none", "list", "dict"}


def field_path(loc: tuple | list) -> str | None:
    """``("body", "candidates", 2)`` -> ``candidates.2``; the body itself -> ``body``."""
    parts = [str(p) for p in loc if not (isinstance(p, str) and (p in _UNION_TAGS or "[" in p))]
    if parts[:1] == ["body"]:
        parts = parts[1:] or ["body"]
    return ".".join(parts) or None


_KINDS = {
    "str": ("a string", "strings"),
    "int": ("an integer", "integers"),
    "float": ("a number", "numbers"),
    "bool": ("a boolean", "booleans"),
    "none": ("null", "nulls"),
    "dict": ("an object", "objects"),
    "list": ("a list", "lists"),
}


def _kind(tag: str, plural: bool = False) -> str:
    """A union branch's tag as a reader says it: ``list[str]`` -> "a list of strings"."""
    if tag.startswith("list[") and tag.endswith("]"):
        return ("lists of " if plural else "a list of ") + _kind(tag[5:-1], plural=True)
    one, many = _KINDS.get(tag, (tag, tag))
    return many if plural else one


def _union_tag_at(loc: tuple | list) -> int | None:
    for i, part in enumerate(loc):
        if isinstance(part, str) and (part in _UNION_TAGS or "[" in part):
            return i
    return None


def _in_union_of(e: dict, first: dict) -> bool:
    at = _union_tag_at(first.get("loc", ()))
    loc = tuple(e.get("loc", ()))
    return at is not None and loc[:at] == tuple(first.get("loc", ()))[:at] and _union_tag_at(loc) == at


def _union_message(first: dict, errors: list[dict], field: str | None) -> str | None:
    """For a field that takes several forms (``text: str | list[str]``) pydantic reports each
    branch separately, "Input should be a valid string" first; say every form the field accepts,
    and what was wrong with the form that came closest (an empty list, a number in a list)."""
    loc = tuple(first.get("loc", ()))
    at = _union_tag_at(loc)
    if at is None:
        return None
    branches: dict[str, dict] = {}
    for e in errors:
        eloc = tuple(e.get("loc", ()))
        if eloc[:at] == loc[:at] and len(eloc) > at and isinstance(eloc[at], str):
            branches.setdefault(eloc[at], e)
    if len(branches) < 2:
        return None
    kinds = [_kind(tag) for tag in branches]
    message = f"`{field}`: expected {', '.join(kinds[:-1])} or {kinds[-1]}"
    details = []
    for tag, e in branches.items():
        if tag.startswith(("list", "dict")) and e.get("type") not in ("list_type", "dict_type"):
            where = field_path(e.get("loc", ()))
            msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
            details.append(f"as {_kind(tag)}: " + (f"`{where}`: {msg}" if where != field else msg))
    return message + (f" ({'; '.join(details)})" if details else "")


def _validation_message(err: dict, field: str | None, known: list[str]) -> str:
    msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    if err.get("type") == "json_invalid":
        msg = f"invalid JSON ({err.get('ctx', {}).get('error', 'decode error')})"
    if err.get("type") == "extra_forbidden":
        name = (field or "").rsplit(".", 1)[-1]
        close = difflib.get_close_matches(name, known, n=1)
        msg = "unknown field" + (f"; did you mean `{close[0]}`?" if close else "")
        if known:
            msg += f" (the fields are: {', '.join(known)})"
    return f"`{field}`: {msg}" if field else msg


def _body_fields(request: Request, loc: tuple | list = ()) -> list[str]:
    """The fields of the object that holds the field at ``loc`` (``("body", "sweep", 0, "x")``:
    a sweep point's), from the app's own OpenAPI schema ([] if unknown)."""
    try:
        route = request.scope.get("route")
        path = getattr(route, "path", request.url.path)
        spec = request.app.openapi()
        body = spec["paths"][path][request.method.lower()]["requestBody"]
        schema = body["content"]["application/json"]["schema"]
        for part in [p for p in loc[1:-1] if not (isinstance(p, str) and p in _UNION_TAGS)]:
            schema = _inside(spec, schema, part)
        return list(_resolved(spec, schema)["properties"])
    except (AttributeError, KeyError, TypeError, IndexError):
        return []


def _resolved(spec: dict, schema: dict) -> dict:
    """``schema`` with its ``$ref`` followed and, of a union, the branch that is an object or a list."""
    if "$ref" in schema:
        return _resolved(spec, spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]])
    for branch in schema.get("anyOf", schema.get("oneOf", [])):
        branch = _resolved(spec, branch)
        if branch.get("type") in ("object", "array") or "properties" in branch:
            return branch
    return schema


def _inside(spec: dict, schema: dict, part: str | int) -> dict:
    """The schema of ``schema``'s field ``part`` (an item, for a list index)."""
    schema = _resolved(spec, schema)
    return schema["items"] if isinstance(part, int) else schema["properties"][part]


async def _on_api_error(request: Request, exc: ApiError) -> JSONResponse:
    return error_response(exc.status, exc.type, exc.message, exc.field, exc.headers)


async def _on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    # An unknown field that looks like a misspelt known one comes first: `{"txt": …}` is a
    # misspelt `text`, and "`text`: Field required" alone would not say so. Otherwise pydantic's
    # order stands (a missing required field before unknown ones).
    holders: dict[tuple, list[str]] = {}  # the fields of each object an unknown field sits in

    def fields_beside(e: dict) -> list[str]:
        loc = tuple(e.get("loc", ()))
        if loc[:-1] not in holders:
            holders[loc[:-1]] = _body_fields(request, loc)
        return holders[loc[:-1]]

    def misspelt(e: dict) -> bool:
        if e.get("type") != "extra_forbidden":
            return False
        name = (field_path(e.get("loc", ())) or "").rsplit(".", 1)[-1]
        return bool(difflib.get_close_matches(name, fields_beside(e), n=1))

    errors = sorted(exc.errors(), key=lambda e: not misspelt(e))
    first: dict[str, Any] = errors[0] if errors else {"loc": ("body",), "msg": "invalid request"}
    field = "body" if first.get("type") == "json_invalid" else field_path(first.get("loc", ("body",)))
    message = _union_message(first, errors, field)
    if message is None:
        known = fields_beside(first) if first.get("type") == "extra_forbidden" else []
        message = _validation_message(first, field, known)
    else:  # the other branches' errors are the same error, said once
        errors = [first, *(e for e in errors[1:] if not _in_union_of(e, first))]
    if field == "body" and "json" not in request.headers.get("content-type", ""):
        message = "`body`: expected a JSON object, sent with Content-Type: application/json"
    if len(errors) > 1:
        others = sorted({field_path(e.get("loc", ())) or "body" for e in errors[1:]} - {field})
        if len(others) > MAX_LISTED_FIELDS:  # a body with 10,000 unknown keys gets a short answer
            others = [*others[:MAX_LISTED_FIELDS], "…"]
        message += f" (and {len(errors) - 1} more error(s)" + (f": {', '.join(others)})" if others else ")")
    return error_response(422, "invalid_request", message, field)


_HTTP_TYPES = {
    400: "invalid_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def _unparsable_body_message(cause: BaseException | None) -> str:
    """Why a body could not be decoded (FastAPI answers 400 and keeps the cause)."""
    if isinstance(cause, RecursionError):
        why = "JSON nested too deeply"
    elif isinstance(cause, UnicodeDecodeError):
        why = "not valid UTF-8"
    elif isinstance(cause, ValueError) and "digits" in str(cause):
        why = "a number with too many digits"
    else:
        why = "not decodable"
    return f"`body`: could not be parsed: {why} (send UTF-8 JSON with Content-Type: application/json)"


async def _on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    status = exc.status_code
    if status == 400:  # the body could not even be decoded: as invalid as bad JSON, so 422 too
        return error_response(422, "invalid_request", _unparsable_body_message(exc.__cause__), "body")
    field = "body" if status in (400, 413) else None
    if status == 404:
        message = f"no route {request.method} {request.url.path}"
    elif status == 405:
        message = f"method {request.method} not allowed on {request.url.path}"
    elif status == 413:
        message = "`body`: request body is larger than the configured limit (RNNLM_MAX_BODY_BYTES)"
        limit = getattr(request.app.state, "settings", None)
        if limit is not None:
            message = (
                f"`body`: request body is larger than the limit of {limit.max_body_bytes} bytes "
                "(RNNLM_MAX_BODY_BYTES)"
            )
    elif status == 400:
        message = "`body`: could not be parsed (send UTF-8 JSON with Content-Type: application/json)"
    else:
        message = str(exc.detail)
    return error_response(
        status, _HTTP_TYPES.get(status, "http_error"), message, field, getattr(exc, "headers", None)
    )


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    # Starlette calls this from its outermost middleware, outside RequestContextMiddleware, whose
    # context variable is reset by then: the id is read from the scope it shares with this request.
    rid = request.scope.get("state", {}).get("request_id") or current_request_id()
    log.error("unhandled error on %s %s (request id %s)", request.method, request.url.path, rid, exc_info=exc)
    return error_response(
        500,
        "internal_error",
        f"internal error; the server log has the details (request id {rid})",
        headers={REQUEST_ID_HEADER: rid} if rid else None,
        request_id=rid,
    )


_E = TypeVar("_E", bound=Exception)


def _add_handler(
    app: FastAPI, exc_class: type[_E], handler: Callable[[Request, _E], Awaitable[JSONResponse]]
) -> None:
    """``app.add_exception_handler``, checked: ``handler`` takes the exception class it is registered for."""
    # Starlette types every handler as taking any Exception; it only ever passes it an exc_class.
    app.add_exception_handler(exc_class, handler)  # type: ignore[arg-type]


def install_error_handlers(
    app: FastAPI, translated: Mapping[type[Exception], Callable[[Any], ApiError]] | None = None
) -> None:
    """The error shape for every error; ``translated``: other exception classes, answered as the
    :class:`ApiError` a function makes of them (the runner's ``ENGINE_ERRORS``)."""
    _add_handler(app, ApiError, _on_api_error)
    _add_handler(app, RequestValidationError, _on_validation_error)
    _add_handler(app, StarletteHTTPException, _on_http_error)
    for exc_class, translate in (translated or {}).items():

        async def on_translated(
            request: Request, exc: Exception, translate: Callable[[Any], ApiError] = translate
        ) -> JSONResponse:
            return await _on_api_error(request, translate(exc))

        _add_handler(app, exc_class, on_translated)
    _add_handler(app, Exception, _on_unexpected)
