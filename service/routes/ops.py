"""GET /health, /ready, /models and /metrics: what an operator (or a load balancer) asks.

/health and /ready answer without an API key (the probes send none); see service/auth.py."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from ..auth import anonymous
from ..deps import MetricsDep, RegistryDep, get_registry
from ..errors import ErrorResponse, not_ready
from ..heads import HeadRunner
from ..runner import ModelRunner
from ..schemas import HeadInfo, HealthResponse, ModelInfo, ModelsResponse, ReadyResponse

router = APIRouter(tags=["operations"])


@router.get("/health", summary="The process is alive")
async def health() -> HealthResponse:
    return HealthResponse(status="ok")


@router.head("/health", include_in_schema=False)
async def health_head() -> Response:
    """What load balancers send: the status alone."""
    return Response(status_code=200)


@router.get(
    "/ready",
    summary="Models are loaded and requests are served",
    responses={503: {"model": ErrorResponse, "description": "Still loading, or failed to load"}},
    response_model_exclude_none=True,
)
async def ready(request: Request) -> ReadyResponse:
    """Public, for readiness probes: with API keys set, a request without a valid one learns only
    whether the models are loaded (service/auth.py), not their names or why loading failed."""
    if anonymous(request):
        if getattr(request.app.state, "registry", None) is None:
            raise not_ready("the models are not loaded (an API key shows why)")
        return ReadyResponse(status="ready")
    return ReadyResponse(status="ready", models=list(get_registry(request).runners))


@router.get(
    "/models",
    summary="The served models and task heads, with their training data and test figures",
    responses={503: {"model": ErrorResponse, "description": "Still loading"}},
)
async def models(registry: RegistryDep, request: Request) -> ModelsResponse:
    return ModelsResponse(
        models=[model_info(r, r.name == registry.default) for r in registry.runners.values()],
        heads=[head_info(h) for h in registry.heads.values()],
        default_choice=getattr(request.app.state, "default_choice", None),
    )


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(metrics: MetricsDep) -> Response:
    return Response(content=metrics.render(), media_type=CONTENT_TYPE_LATEST)


_GENERAL = ("kind", "vocab_size", "tokenizer", "language", "normalizer", "parameters", "device")


def model_info(runner: ModelRunner, default: bool) -> ModelInfo:
    """What /models says about one model: its description plus figures from its metrics.json."""
    described = runner.describe()
    m = getattr(runner.lm, "metrics", None) or {}
    # metrics.json is an object (model/models/checkpoint.py checks it at load); its fields are read
    # only in the forms training writes, so a hand-edited one cannot make /models a 500
    given = m.get("data")
    given = given if isinstance(given, dict) else {}
    data = {k: v for k, v in given.items() if k != "dir"}  # no server paths
    corpus = given.get("dir")
    if isinstance(corpus, str) and corpus:
        data["corpus"] = Path(corpus).name
    training = {"data": data} if data else {}
    for key in (
        "total_steps",
        "steps",
        "tokens_seen",
        "train_time_s",
        "best",
        "train_config",
        "fit_config",
        "init_from",
    ):
        if key in m:
            training[key] = m[key]
    if isinstance(m.get("hardware"), dict):
        training["device"] = m["hardware"].get("device")
    return ModelInfo(
        name=runner.name,
        default=default,
        kind=described["kind"],
        tokenizer=described["tokenizer"],
        language=runner.lm.tokenizer.language,
        normalizer=runner.lm.tokenizer.normalizer,
        direction=runner.lm.tokenizer.direction,
        vocab_size=described["vocab_size"],
        parameters=described.get("parameters"),
        device=str(described.get("device", "cpu")),
        architecture={k: v for k, v in described.items() if k not in _GENERAL and k != "components"},
        components=described.get("components", {}),
        training=training,
        metrics={split: m[split] for split in ("valid", "test") if isinstance(m.get(split), dict)},
    )


def head_info(head: HeadRunner) -> HeadInfo:
    """What /models says about one task head: its shape and the figures of its metrics.json."""
    described = head.describe()
    m = head.metrics
    given = m.get("data")
    corpus = given.get("dir") if isinstance(given, dict) else None
    training = {
        key: m[key] for key in ("task", "train_sentences", "train_texts", "train_chars", "best") if key in m
    }
    if isinstance(corpus, str) and corpus:
        training["corpus"] = Path(corpus).name  # no server paths
    return HeadInfo(
        name=head.name,
        kind=head.kind,
        labels=len(head.labels),
        classes=head.classes,
        tokenizer=head.tokenizer.kind,
        vocab_size=head.tokenizer.vocab_size,
        parameters=described["parameters"],
        device=described["device"],
        architecture=described["architecture"],
        training=training,
        metrics={split: m[split] for split in ("valid", "test") if isinstance(m.get(split), dict)},
    )
