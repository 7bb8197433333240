"""Optional API-key authentication: ``Authorization: Bearer <key>`` on every route but a few public ones.

Off unless ``RNNLM_API_KEY`` (or ``RNNLM_API_KEYS``, several keys, e.g. one per client or an
old and a new one while rotating) is set. Public without a key:

- ``/health``: the process is alive (Docker's HEALTHCHECK, load balancers, liveness probes);
- ``/ready``: the models are loaded and the process is not draining (readiness probes, which send
  no header). Without a valid key it says only that: 200 ``{"status": "ready"}`` or a 503 with no
  reason; the model names and a load error's reason need the key (:func:`anonymous`);
- ``/`` and ``/static/*``: the playground page itself. It holds no data; its API calls need the
  key like any other client's, and without one they show the 401 message in place;
- ``/docs``, ``/redoc``, ``/openapi.json``: the API description (no data, no model access); the
  "Authorize" button of /docs sends the key.

A request with a valid key belongs to that key's tenant (:func:`tenant`, a digest of the key):
each tenant has its own scope in the prefix-state cache, so no tenant can learn by timing what
another sent recently (service/deps.py, model/models/state_cache.py).

Everything else (the model routes, /models, /metrics) answers 401 with the error shape
and ``WWW-Authenticate: Bearer`` without a valid key. Keys are compared in constant time.
CORS preflight requests (``OPTIONS``) carry no credentials and are never refused here.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import error_response

PROBE_PATHS = frozenset({"/health", "/ready"})
PUBLIC_PATHS = PROBE_PATHS | {"/", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
PUBLIC_PREFIXES = ("/static/",)
ANONYMOUS = "rnnlm_anonymous"  # request.state: a public route reached without a valid key
TENANT = "rnnlm_tenant"  # request.state: who sent it (a digest of its key; "" without keys)


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


def tenant(request: Request) -> str:
    """The request's tenant: a digest of its API key ("" when no keys are set: one tenant)."""
    return str(getattr(request.state, TENANT, ""))


def anonymous(request: Request) -> bool:
    """Keys are set and this request (to a public route) carries no valid one: answer it with
    nothing a key would guard."""
    return bool(getattr(request.state, ANONYMOUS, False))


class ApiKeyMiddleware:
    def __init__(self, app: ASGIApp, keys: Sequence[str]) -> None:
        if not keys:
            raise ValueError("ApiKeyMiddleware needs at least one key")
        self.app = app
        self.keys = [k.encode() for k in keys]

    def accepts(self, authorization: str) -> bool:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return False
        given = token.strip().encode("utf-8", "replace")
        # Compare with every key (no early exit), so the time taken says nothing about which matched.
        return sum(hmac.compare_digest(given, key) for key in self.keys) > 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        authorization = Headers(scope=scope).get("authorization", "")
        accepted = self.accepts(authorization)
        if accepted or is_public(scope["path"]):
            state = scope.setdefault("state", {})
            state[ANONYMOUS] = not accepted
            if accepted:
                token = authorization.partition(" ")[2].strip().encode("utf-8", "replace")
                state[TENANT] = hashlib.sha256(b"rnnlm-tenant\0" + token).hexdigest()
            await self.app(scope, receive, send)
            return
        problem = "missing" if not authorization else "not a valid API key"
        response = error_response(
            401,
            "unauthorized",
            f"`Authorization`: {problem}; send the header "
            "`Authorization: Bearer <key>` with a key the server was configured with (RNNLM_API_KEY)",
            "Authorization",
            {"WWW-Authenticate": 'Bearer realm="rnnlm"'},
        )
        await response(scope, receive, send)
