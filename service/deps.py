"""What routes receive through ``Depends``: the settings, the loaded models, the metrics."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from .errors import not_ready
from .metrics import ServiceMetrics
from .runner import ModelRegistry
from .settings import Settings, get_settings


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
