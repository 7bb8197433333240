"""Structured logs: one JSON object per line on stderr, for the service's loggers and uvicorn's alike.

::

    {"ts": "2026-11-23T21:40:00.123Z", "level": "info", "logger": "rnnlm.access", "msg": "request",
     "request_id": "3f2a…", "method": "POST", "path": "/score", "status": 200, "duration_ms": 4.1,
     "bytes_sent": 412}

Every line logged while a request is answered carries its ``request_id``. Extra fields come from
``extra={"fields": {...}}``. Request text is never logged (see service/context.py), and an
exception's traceback goes to the log (``exc``), never to a response.
"""

from __future__ import annotations

import json
import logging
import sys
import time

from .context import current_request_id

UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")


class RequestIdFilter(logging.Filter):
    """Stamps each record with the current request id (None outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = current_request_id()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)  # set by RequestIdFilter
        if request_id:
            entry["request_id"] = request_id
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = dict(getattr(record, "fields", None) or {})
        request_id = getattr(record, "request_id", None)  # set by RequestIdFilter
        if request_id:
            extras = {"request_id": request_id, **extras}
        return line + "".join(f" {k}={v}" for k, v in extras.items())


def configure_logging(level: str = "info", fmt: str = "json") -> None:
    """Send every log record (the service's and uvicorn's) to stderr in one format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    for name in UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers = []
        logger.propagate = True
