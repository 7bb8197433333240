"""The FastAPI application: ``create_app(settings)`` wires settings, models, routes, errors, metrics.

::

    request ─▶ request id + access log ─▶ metrics ─▶ CORS ─▶ API key ─▶ guard ─▶ body limit ─▶ route
               (context.py)                          (if     (auth.py,   (guard.py: deadline,    │
                                                      set)    if set)     disconnect, shutdown)   │
                                                                                                  ▼
          admission (admission.py: slots per model, open streams; 503 + Retry-After) ─▶ ModelRunner ─▶ model/
    any error ─▶ one JSON shape (service/errors.py), with the request id

Between metrics and CORS, a request with both Content-Length and Transfer-Encoding is refused
with 400 (service/limits.py: request smuggling). Paths are exact: ``/score/`` is a 404, not a
redirect. ``HEAD /health`` answers 200 for load balancers.

Models load once: before uvicorn starts under ``rnnlm serve`` (service/startup.py, so a broken
checkpoint is one line and exit 1), else in the lifespan, off the event loop; until then model
routes and /ready answer 503. ``GET /`` serves the playground page (service/static/index.html)
when it exists.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import torch
from fastapi import Depends, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.middleware.cors import CORSMiddleware

from model import __version__

from .admission import Admission, admit
from .auth import ApiKeyMiddleware, is_public
from .context import HEADER as REQUEST_ID_HEADER
from .context import RequestContextMiddleware
from .default_choice import shown_choice
from .deps import prefix_cache_scope
from .errors import ApiError, install_error_handlers
from .guard import Drain, RequestGuardMiddleware
from .heads import head_limits
from .limits import BodyLimitMiddleware, FramingMiddleware, document_limits
from .metrics import MetricsMiddleware, ServiceMetrics
from .openai_errors import OpenAIErrorsMiddleware
from .routes import classify, decode, embed, generate, next_token, openai, ops, score, tag, tokenize
from .runner import ENGINE_ERRORS, ModelRegistry
from .settings import Settings, get_settings
from .startup import StartupError, load_registry, public_reason

log = logging.getLogger("rnnlm.service")
STATIC_DIR = Path(__file__).resolve().parent / "static"

DESCRIPTION = """Score, rerank, predict, generate, embed and decode text with a trained RNN language model;
tag words and parts of speech, or label texts (sentiment), with task heads built on it (RNNLM_HEAD_DIRS).

All log-probs are natural logs. Every error has the same JSON shape:
`{"error": {"type", "message", "field", "status"}}`.

Not listed here, because they follow their owners' protocols (docs/API.md describes them):
OpenAI's `POST /v1/completions` and `GET /v1/models` (errors in OpenAI's shape), and
`POST /tokenize`, `POST /detokenize`, `GET /tokenizer_info` as llama.cpp and vLLM name them.
"""


def preload(app: FastAPI) -> None:
    """Load the models now, before the server starts; the lifespan then uses them.

    Raises :class:`~service.startup.StartupError` unless ``start_on_load_error`` is set.
    """
    try:
        app.state.preloaded = load_registry(app.state.settings)
    except StartupError as e:
        if not app.state.settings.start_on_load_error:
            raise
        app.state.preloaded = e


async def _open_registry(app: FastAPI, settings: Settings) -> ModelRegistry | None:
    """The loaded models, or None (with ``app.state.not_ready_reason``) when allowed to start without."""
    loaded = getattr(app.state, "preloaded", None)
    app.state.preloaded = None
    if loaded is None:
        try:
            loaded = await asyncio.to_thread(load_registry, settings)
        except StartupError as e:
            if not settings.start_on_load_error:
                log.error("cannot start: %s", e)
                raise
            loaded = e
    if isinstance(loaded, StartupError):
        log.error("serving without models (RNNLM_START_ON_LOAD_ERROR): %s", loaded)
        reason = public_reason(str(loaded), [*settings.model_dirs, *settings.head_dirs])
        app.state.not_ready_reason = f"cannot load the models: {reason}"
        return None
    return loaded


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    app.state.drain.bind(asyncio.get_running_loop())
    registry = await _open_registry(app, settings)
    if registry is not None:
        await registry.start(
            settings.engine_config(), app.state.metrics.engine_observer(), head_limits(settings)
        )
        log.info("ready: %s", ", ".join([*registry.runners, *registry.heads]))
    app.state.registry = registry
    # shown by /models: read once, not per request, off the event loop (service/startup.py)
    app.state.default_choice = await asyncio.to_thread(shown_choice, settings.model_dirs)
    try:
        yield
    finally:
        app.state.registry = None
        if registry is not None:
            await registry.stop(settings.shutdown_grace_s)


def create_app(settings: Settings | None = None, static_dir: Path = STATIC_DIR) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(
        title="rnnlm",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # /docs and /redoc are added by _add_docs, from the service's own assets
        redoc_url=None,
        # one URL per route: `POST /score/` is a 404 in the error shape, not a 307 to /score (a
        # redirected POST is re-sent by few clients, and each spelling would be a route to guard)
        redirect_slashes=False,
    )
    app.state.settings = settings
    app.state.registry = None
    app.state.not_ready_reason = None
    app.state.metrics = metrics = ServiceMetrics()
    app.state.drain = drain = Drain(settings.shutdown_grace_s)
    app.state.admission = admission = Admission(settings.max_in_flight, settings.max_streams, metrics)

    async def app_settings() -> Settings:  # async: FastAPI runs a plain function in a worker thread
        return settings

    app.dependency_overrides[get_settings] = app_settings

    install_error_handlers(app, ENGINE_ERRORS)
    # openai, tokenize: the ecosystem's protocols (/v1/completions, /tokenize, ...) on the same engine
    admitted = [m.router for m in (next_token, score, embed, decode, generate, openai)]
    # guarded (deadline, disconnect); tokenize runs no model; tag and classify admit by their head
    # (routes/head_router.py)
    head_routers = [tag.router, classify.router]
    model_routers = [*admitted, *head_routers, tokenize.router]
    app.include_router(ops.router)
    app.include_router(openai.info_router)
    app.include_router(tokenize.info_router)
    for router in admitted:  # each request's prefix-cache scope: its tenant and cache_salt (deps.py)
        app.include_router(router, dependencies=[Depends(admit), Depends(prefix_cache_scope)])
    app.include_router(tokenize.router)  # no admission slot: a flood of them never refuses /score
    for router in head_routers:  # the task heads' routes: admitted by the head's name
        app.include_router(router)
    routers = [ops.router, openai.info_router, tokenize.info_router, *model_routers]
    _add_docs(app)  # before the playground: its /static/docs mount must come before /static
    _add_playground(app, static_dir)
    # The endpoint label of the metrics: a route's path, so series stay few whatever the URL.
    paths = {r.path for r in app.routes if hasattr(r, "path")}
    paths |= {r.path for router in routers for r in router.routes if hasattr(r, "path")}
    model_paths = {r.path for router in model_routers for r in router.routes if hasattr(r, "path")}

    # Innermost first: each add_middleware wraps everything added before it.
    app.add_middleware(
        BodyLimitMiddleware,
        max_body_bytes=settings.max_body_bytes,
        body_timeout_s=settings.body_timeout_s,
        max_buffered_body_bytes=settings.max_buffered_body_bytes,
    )
    app.add_middleware(
        RequestGuardMiddleware,
        drain=drain,
        timeout_s=settings.request_timeout_s,
        guarded_paths=model_paths,
        on_end=lambda reason: admission.rejected.labels(reason).inc(),
    )
    if settings.accepted_keys():
        app.add_middleware(ApiKeyMiddleware, keys=settings.accepted_keys())
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", REQUEST_ID_HEADER],
            expose_headers=[REQUEST_ID_HEADER, "Retry-After"],
            max_age=600,
        )
    app.add_middleware(FramingMiddleware)  # Content-Length with Transfer-Encoding: 400, before any key
    app.add_middleware(OpenAIErrorsMiddleware)  # under /v1/: every error above in OpenAI's shape
    app.add_middleware(MetricsMiddleware, metrics=metrics, route_paths=paths)
    app.add_middleware(RequestContextMiddleware, log_request_text=settings.log_request_text)

    def openapi() -> dict:
        if app.openapi_schema is None:
            spec = document_limits(FastAPI.openapi(app), settings)
            app.openapi_schema = document_reliability(spec, settings)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def document_reliability(spec: dict, settings: Settings) -> dict:
    """Write the overload limits and, when keys are set, the bearer authentication into the schema."""
    gen = spec.get("components", {}).get("schemas", {}).get("GenerateRequest", {}).get("properties", {})
    if "stream" in gen:
        gen["stream"]["description"] += (
            f" Limit: {settings.max_streams} open streams (RNNLM_MAX_STREAMS); past it: 503 with Retry-After."
        )
    if not settings.accepted_keys():
        return spec
    # ErrorResponse is in the schema already: every model route documents its errors with it.
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}}
    spec["components"].setdefault("securitySchemes", {})["bearer"] = {
        "type": "http",
        "scheme": "bearer",
        "description": "RNNLM_API_KEY: `Authorization: Bearer <key>`",
    }
    for path, operations in spec.get("paths", {}).items():
        if is_public(path):
            continue
        for operation in operations.values():
            operation["security"] = [{"bearer": []}]
            operation.setdefault("responses", {})["401"] = {
                "description": "Missing or invalid API key",
                **error,
            }
    return spec


# Swagger UI's and ReDoc's files, from the pinned `fastapi-offline` package (pyproject.toml)
DOCS_ASSETS = ("fastapi_offline", "static")
DOCS_ASSETS_PATH = "/static/docs"  # public without an API key, as all of /static (service/auth.py)


def _add_docs(app: FastAPI) -> None:
    """``/docs`` (Swagger UI) and ``/redoc`` served with the service's own copy of their scripts
    and styles (FastAPI's "self-hosting" recipe): no CDN, so they work without internet, and
    Swagger's online validator is switched off, so nothing leaves the server."""

    def root(request: Request) -> str:
        return request.scope.get("root_path", "").rstrip("/")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        base = root(request)
        return get_swagger_ui_html(
            openapi_url=base + (app.openapi_url or "/openapi.json"),
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=base + "/docs/oauth2-redirect",
            swagger_js_url=f"{base}{DOCS_ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{base}{DOCS_ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{base}{DOCS_ASSETS_PATH}/favicon.png",
            swagger_ui_parameters={"validatorUrl": None},
        )

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        base = root(request)
        return get_redoc_html(
            openapi_url=base + (app.openapi_url or "/openapi.json"),
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{base}{DOCS_ASSETS_PATH}/redoc.standalone.js",
            redoc_favicon_url=f"{base}{DOCS_ASSETS_PATH}/favicon.png",
            with_google_fonts=False,
        )

    app.mount(DOCS_ASSETS_PATH, StaticFiles(packages=[DOCS_ASSETS]), name="docs-assets")


def _add_playground(app: FastAPI, static_dir: Path) -> None:
    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        page = static_dir / "index.html"
        if not page.is_file():
            raise ApiError(404, "not_found", "no playground page is installed; the API is at /docs")
        return FileResponse(page)

    if static_dir.is_dir():
        app.mount("/static", StaticFiles(directory=static_dir), name="static")
