"""What routes receive through ``Depends``: the settings, the loaded models, the metrics, and the
request body, parsed and checked against the limits.

A body goes one way, through few hands::

    bytes ─▶ OffLoopBodyRoute: over LARGE_BODY_BYTES, json.loads + model validation in the body
             worker (one thread); a 422 from there has FastAPI's shape (``loc: ["body", ...]``)
      ─▶ FastAPI's body field (the parsed dict, validated again: well under a ms on the loop)
      ─▶ within_limits: 413 naming the field past a configured limit (FastAPI runs it in a thread)
      ─▶ the route
"""

from __future__ import annotations

import asyncio
import email.message
import functools
import inspect
import json
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any, TypeVar

from fastapi import Depends, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from model.models.state_cache import enter_scope, scope_key

from .auth import tenant
from .errors import not_ready
from .limits import check_limits
from .metrics import ServiceMetrics
from .runner import ModelRegistry
from .schemas import GenerateRequest, NextTokenRequest, ScoreRequest
from .settings import Settings, get_settings

Body = TypeVar("Body", bound=BaseModel)


def get_registry(request: Request) -> ModelRegistry:
    """The loaded models; 503 until the lifespan has loaded them."""
    registry = getattr(request.app.state, "registry", None)
    if registry is None:
        reason = getattr(request.app.state, "not_ready_reason", None)  # a model failed to load
        raise not_ready(reason) if reason else not_ready()
    return registry


async def prefix_cache_scope(request: Request) -> None:
    """Router dependency: the request's prefix-state cache scope, for the rest of its task (the
    engine reads it when the request is submitted): its tenant (one per API key), narrowed by its
    ``cache_salt`` if it sends one. Async, so that it runs in the route's own context."""
    body = await _json_object(request)
    salt = body.get("cache_salt")
    enter_scope(scope_key(tenant(request), salt if isinstance(salt, str) else ""))


async def _json_object(request: Request) -> dict:
    """The JSON body already read (FastAPI caches it on the request), or {} if it is not an object."""
    try:
        body = await request.json()
    except Exception:  # not JSON: the route answers 422
        return {}
    return body if isinstance(body, dict) else {}


def get_metrics(request: Request) -> ServiceMetrics:
    return request.app.state.metrics


SettingsDep = Annotated[Settings, Depends(get_settings)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
MetricsDep = Annotated[ServiceMetrics, Depends(get_metrics)]


def within_limits(model: type[Body]) -> Callable[..., Body]:
    """A dependency that reads the request body as ``model`` and checks it against the configured
    limits (413 naming the field): every route gets its body through one, never unchecked."""

    def checked(body: BaseModel, settings: Settings) -> BaseModel:
        check_limits(body, settings)
        return body

    # FastAPI reads the parameters' types from the signature: the body's model, the settings.
    checked.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter("body", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=model),
            inspect.Parameter("settings", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=SettingsDep),
        ]
    )
    return checked  # type: ignore[return-value]


ScoreBody = Annotated[ScoreRequest, Depends(within_limits(ScoreRequest))]
NextTokenBody = Annotated[NextTokenRequest, Depends(within_limits(NextTokenRequest))]
GenerateBody = Annotated[GenerateRequest, Depends(within_limits(GenerateRequest))]


LARGE_BODY_BYTES = 64 * 1024  # bodies from this size on are parsed and validated off the event loop


@functools.cache
def body_worker() -> ThreadPoolExecutor:
    """The one thread that parses large bodies: they queue behind each other, never in front of the
    small requests' work (the loop's default executor) or of the event loop itself."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="rnnlm-body")


def parse_body(raw: bytes, model: type[BaseModel]) -> Any:
    """``raw`` as JSON, validated as ``model``: the parsed JSON (FastAPI validates it again, cheaply),
    or the RequestValidationError FastAPI would raise for it (422 naming the field)."""
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as e:  # as FastAPI words it (fastapi.routing.get_request_handler)
        error = {
            "type": "json_invalid",
            "loc": ("body", e.pos),
            "msg": "JSON decode error",
            "input": {},
            "ctx": {"error": e.msg},
        }
        raise RequestValidationError([error], body=e.doc) from e
    try:
        model.model_validate(data)
    except ValidationError as e:
        errors = [{**err, "loc": ("body", *err["loc"])} for err in e.errors(include_url=False)]
        raise RequestValidationError(errors, body=data) from e
    return data


def _is_json(content_type: str | None) -> bool:
    if not content_type:
        return False
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (
        subtype == "json" or subtype.endswith("+json")
    )


class OffLoopBodyRoute(APIRoute):
    """A route whose large JSON bodies are parsed and validated in :func:`body_worker`, so the event
    loop keeps answering (``/health``, small requests) while a megabyte is decoded. FastAPI then
    finds the parsed JSON cached on the request and validates the dict (which is cheap) as usual.
    Use it as ``APIRouter(route_class=OffLoopBodyRoute)``."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        field = self.body_field
        model = field.field_info.annotation if field is not None else None
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or self._embed_body_fields:
            return handler

        async def parse_then_handle(request: Request) -> Response:
            try:
                raw = await request.body()  # kept on the request: FastAPI reads it from there
            except (StarletteHTTPException, ClientDisconnect):  # 408/413/503 (the body limits); a client gone
                raise
            except Exception as e:  # as FastAPI answers a body it cannot read
                raise HTTPException(400, "There was an error parsing the body") from e
            if len(raw) >= LARGE_BODY_BYTES and _is_json(request.headers.get("content-type")):
                loop = asyncio.get_running_loop()
                try:
                    request._json = await loop.run_in_executor(body_worker(), parse_body, raw, model)
                except RequestValidationError:
                    raise
                except Exception as e:  # nested too deeply, not UTF-8, ...: as FastAPI (errors.py words it)
                    raise HTTPException(400, "There was an error parsing the body") from e
            return await handler(request)

        return parse_then_handle
