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

The other file read at start-up, ``weights/DEFAULT.json`` (which models to serve when
RNNLM_MODEL_DIRS is not set, and how the default was chosen, shown by ``GET /models``), is read
under the checkpoint files' rules (model/models/checkpoint.py): a regular file (a FIFO or ``/dev/zero``
is refused before it is opened), at most ``MAX_CHOICE_BYTES``, a JSON object whose ``serve`` is
a non-empty list of paths that exist. When it chooses the models, a file that breaks a rule is a
settings error, one line naming it (``rnnlm serve`` exits 2); a missing model is never replaced
by another. When RNNLM_MODEL_DIRS chooses them, it is only shown, if it describes those models.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from model.models.checkpoint import CheckpointError, read_json

from .runner import ModelRegistry

if TYPE_CHECKING:
    from .settings import Settings

log = logging.getLogger("rnnlm.service")
_ABSOLUTE_PATH = re.compile(r"(?<![\w.])/(?:[^/\s:'\"]+/)+([^/\s:'\"]+)")

DEFAULT_CHOICE = Path("weights/DEFAULT.json")
FALLBACK_MODEL_DIRS = ["weights/pd98-char-lstm"]  # served when there is no DEFAULT.json
MAX_CHOICE_BYTES = 64 * 1024  # DEFAULT.json: `rnnlm benchmark choose-default` writes about 2 KB
MAX_SERVED = 64  # models one DEFAULT.json may name
_INSTEAD = "run `rnnlm benchmark choose-default` again, or set RNNLM_MODEL_DIRS"


class StartupError(RuntimeError):
    """The models cannot be served; the message is one line naming the path and the problem."""


def load_registry(settings: Settings) -> ModelRegistry:
    """Resolve the device and load every configured model, or raise :class:`StartupError`."""
    try:
        registry = ModelRegistry.load(settings.model_dirs, settings.device)
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


def one_line(message: str) -> str:
    return " ".join(message.split())


def public_reason(message: str, model_dirs: Sequence[str]) -> str:
    """The message for HTTP clients: server paths shortened to the model directory's name."""
    for d in sorted(model_dirs, key=len, reverse=True):
        path = Path(d)
        for form in {str(path.resolve()), str(path)}:
            if form not in (".", "/"):
                message = message.replace(form, path.resolve().name)
    return _ABSOLUTE_PATH.sub(r"\1", message)


# -- weights/DEFAULT.json --------------------------------------------------------------------------
class DefaultChoiceError(ValueError):
    """weights/DEFAULT.json cannot be followed; the message is one line naming the file. A
    ValueError, so that as the default of a setting it is a settings error (service/settings.py)."""


def read_default_choice(choice: Path = DEFAULT_CHOICE) -> dict | None:
    """The recorded choice, checked (see the module's docstring), or None when there is no file;
    anything else that is wrong with it: :class:`DefaultChoiceError`."""
    if not os.path.lexists(choice):
        return None
    try:
        record = read_json(choice, MAX_CHOICE_BYTES)
    except CheckpointError as e:
        raise DefaultChoiceError(f"{one_line(str(e))}; {_INSTEAD}") from e
    serve = record.get("serve")
    if not isinstance(serve, list) or not 1 <= len(serve) <= MAX_SERVED:
        raise DefaultChoiceError(
            f"{choice}: `serve` must be a list of 1 to {MAX_SERVED} model directories, not "
            f"{_shown(serve)}; {_INSTEAD}"
        )
    for i, d in enumerate(serve):
        if not isinstance(d, str) or not d.strip() or len(d) > 4096 or "\0" in d:
            raise DefaultChoiceError(
                f"{choice}: `serve.{i}` must be a model directory's path, not {_shown(d)}"
            )
    default = record.get("default", serve[0])
    if default != serve[0]:
        raise DefaultChoiceError(
            f"{choice}: `default` ({_shown(default)}) must be the first model of `serve` ({serve[0]!r}); "
            f"{_INSTEAD}"
        )
    return record


def default_model_dirs(choice: Path = DEFAULT_CHOICE) -> list[str]:
    """The models the recorded choice serves, best reranker first (without a file:
    ``FALLBACK_MODEL_DIRS``). A model it names that is not there is an error, never skipped."""
    record = read_default_choice(choice)
    if record is None:
        return list(FALLBACK_MODEL_DIRS)
    for i, d in enumerate(record["serve"]):
        if not Path(d).exists():
            raise DefaultChoiceError(f"{choice}: `serve.{i}` names {d}, which does not exist; {_INSTEAD}")
    return list(record["serve"])


def shown_choice(model_dirs: Sequence[str], choice: Path = DEFAULT_CHOICE) -> dict | None:
    """What ``GET /models`` shows as ``default_choice``: the recorded choice when it is the one
    being served (its ``serve`` names ``model_dirs``, in order), else None. Models named by
    RNNLM_MODEL_DIRS do not need the file: one that cannot be read is logged and not shown."""
    try:
        record = read_default_choice(choice)
    except DefaultChoiceError as e:
        log.warning("%s is not shown by /models: %s", choice, e)
        return None
    if record is None or [_same(d) for d in record["serve"]] != [_same(d) for d in model_dirs]:
        return None
    return record


def _same(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path))


def _shown(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
