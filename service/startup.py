"""Loading the served models at startup, with one clear line when it cannot be done.

::

    rnnlm serve ─▶ load_registry(settings) ──ok──▶ uvicorn (the lifespan reuses what was loaded)
                        │
                        └─ StartupError ─▶ "error: cannot start: weights/x/model.safetensors: sha256
                                             … does not match config.json; the file is truncated or
                                             was modified"   on stderr, exit status 1, no traceback
                           (RNNLM_START_ON_LOAD_ERROR=true: serve anyway; /ready answers 503 with the
                            reason, paths shortened to the model directory's name)

Loading happens before uvicorn starts, so a broken checkpoint never reaches uvicorn's lifespan
error path (which prints a traceback). Under ``TestClient`` the lifespan calls the same function.

The other file read at start-up, ``weights/DEFAULT.json``, has its reader in
service/default_choice.py (the settings take their default models from it).
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from model.models.checkpoint import CheckpointError

from .default_choice import one_line
from .runner import ModelRegistry

if TYPE_CHECKING:
    from .settings import Settings

log = logging.getLogger("rnnlm.service")
_ABSOLUTE_PATH = re.compile(r"(?<![\w.])/(?:[^/\s:'\"]+/)+([^/\s:'\"]+)")


class StartupError(RuntimeError):
    """The models cannot be served; the message is one line naming the path and the problem."""


def load_registry(settings: Settings) -> ModelRegistry:
    """Resolve the device and load every configured model and task head (RNNLM_HEAD_DIRS), or
    raise :class:`StartupError`."""
    try:
        registry = ModelRegistry.load(settings.model_dirs, settings.device, settings.head_dirs)
        apply_numerics(registry, settings)
        return registry
    except CheckpointError as e:
        raise StartupError(one_line(str(e))) from e
    except Exception as e:  # a device that does not exist, duplicate names, a loader's own error
        raise StartupError(one_line(_describe(e))) from e


def apply_numerics(registry: ModelRegistry, settings: Settings) -> None:
    """Each model's precision (RNNLM_MODEL_PRECISION, else RNNLM_PRECISION) and batch invariance
    (model/models/precision.py). What a model was asked for by name must apply; the global settings
    leave a model that cannot run them as it is, with a warning."""
    unknown = sorted(set(settings.model_precision) - set(registry.runners))
    if unknown:
        raise ValueError(
            f"RNNLM_MODEL_PRECISION names no served model: {', '.join(unknown)} "
            f"(served: {', '.join(registry.runners)})"
        )
    for name, runner in registry.runners.items():
        explicit = settings.model_precision.get(name)
        precision = explicit or settings.precision
        if precision == "fp32" and not settings.batch_invariant:
            continue
        try:
            runner.lm.set_numerics(precision, settings.batch_invariant)
        except ValueError as e:
            if explicit is not None and explicit != "fp32":
                raise ValueError(f"RNNLM_MODEL_PRECISION: model {name}: {e}") from e
            log.warning("model %s: %s; it runs with its defaults", name, e)
            with contextlib.suppress(ValueError):  # the precision failed: batch invariance alone
                runner.lm.set_numerics("fp32", settings.batch_invariant)


def _describe(e: Exception) -> str:
    """Our own errors say what is wrong; anything else also says what kind of error it is."""
    if isinstance(e, RuntimeError | ValueError | OSError) and str(e):
        return str(e)
    return f"{type(e).__name__}: {e}"


def public_reason(message: str, model_dirs: Sequence[str]) -> str:
    """The message for HTTP clients: server paths shortened to the model directory's name."""
    for d in sorted(model_dirs, key=len, reverse=True):
        path = Path(d)
        for form in {str(path.resolve()), str(path)}:
            if form not in (".", "/"):
                message = message.replace(form, path.resolve().name)
    return _ABSOLUTE_PATH.sub(r"\1", message)
