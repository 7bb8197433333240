"""What routes receive through ``Depends``: the settings, the loaded models, the metrics."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Annotated, TypeVar

from fastapi import Depends, Request
from pydantic import BaseModel

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
