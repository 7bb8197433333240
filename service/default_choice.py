"""``weights/DEFAULT.json``: which models to serve when RNNLM_MODEL_DIRS is not set, and how the
default was chosen (shown by ``GET /models``).

It is read under the checkpoint files' rules (model/models/checkpoint.py): a regular file (a FIFO
or ``/dev/zero`` is refused before it is opened), at most ``MAX_CHOICE_BYTES``, a JSON object whose
``serve`` is a non-empty list of paths that exist. When it chooses the models, a file that breaks a
rule is a settings error, one line naming it (``rnnlm serve`` exits 2); a missing model is never
replaced by another. When RNNLM_MODEL_DIRS chooses them, it is only shown, if it describes those
models. The settings (service/settings.py) take their default from here; start-up
(service/startup.py) loads what the settings name.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from model.models.checkpoint import CheckpointError, read_json

log = logging.getLogger("rnnlm.service")

DEFAULT_CHOICE = Path("weights/DEFAULT.json")
FALLBACK_MODEL_DIRS = ["weights/pd98-char-lstm"]  # served when there is no DEFAULT.json
MAX_CHOICE_BYTES = 64 * 1024  # DEFAULT.json: `rnnlm benchmark choose-default` writes about 2 KB
MAX_SERVED = 64  # models one DEFAULT.json may name
_INSTEAD = "run `rnnlm benchmark choose-default` again, or set RNNLM_MODEL_DIRS"


def one_line(message: str) -> str:
    return " ".join(message.split())


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
