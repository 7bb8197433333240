"""What the task heads' routes share (POST /tag, POST /classify): a router whose requests each hold an
admission slot of the head they name, counted by the head's name apart from the language models'
slots (RNNLM_MAX_IN_FLIGHT, service/admission.py), and whose bodies are read off the event loop."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from fastapi import APIRouter, Depends, Request

from ..admission import Admission
from ..deps import OffLoopBodyRoute


def admit_head(kind: str) -> Callable[[Request], AsyncIterator[None]]:
    """A router dependency: hold a slot of the request's head of ``kind`` (its ``model``, else the
    first of that kind served), as service/admission.py's ``admit`` does for a model, from here to
    its last byte; an unknown name gets its 404 from the route."""

    async def admit(request: Request) -> AsyncIterator[None]:
        admission: Admission = request.app.state.admission
        try:
            body = await request.json()
        except Exception:  # not JSON: the route answers 422
            body = {}
        name = body.get("model") if isinstance(body, dict) else None
        registry = getattr(request.app.state, "registry", None)
        heads = registry.heads if registry is not None else {}
        of_kind = [h.name for h in heads.values() if h.kind == kind]
        slot = name if isinstance(name, str) and name in heads else (of_kind[0] if of_kind else "-")
        with admission.slot(slot, False):
            yield

    return admit


def head_router(kind: str) -> APIRouter:
    """The router of a head kind's routes: each request admitted by its head (:func:`admit_head`)."""
    return APIRouter(tags=["model"], route_class=OffLoopBodyRoute, dependencies=[Depends(admit_head(kind))])
