"""Structured logs: one JSON object per line on standard error, with the request id.

Every line has ``time``, ``level``, ``logger`` and ``message``; inside a request also
``request_id`` (taken from a well-formed ``X-Request-Id`` header, else made here, and sent back in
the response). Extra fields come from ``extra={...}``. What is never logged: request or response
bodies, headers (API keys travel in ``Authorization``), query strings, passwords, tokens and the
parameters of failed SQL statements (SQLAlchemy puts them in its messages; only the driver's own
message is kept). Access lines carry method, path, status, duration and the tenant id.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import traceback
from contextvars import ContextVar
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from sqlalchemy.exc import StatementError

__all__ = [
    "JsonFormatter",
    "configure_logging",
    "current_request_id",
    "request_id_var",
    "safe_request_id",
]

request_id_var: ContextVar[str | None] = ContextVar("mailconnect_request_id", default=None)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_STANDARD = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys()
    | {"message", "asctime", "color_message"}
)


def current_request_id() -> str | None:
    return request_id_var.get()


def safe_request_id(value: str | None) -> str | None:
    """The caller's request id when it is short and plain (no spaces, no control characters)."""
    if value and _REQUEST_ID.match(value):
        return value
    return None


def _exception_text(
    info: tuple[type[BaseException], BaseException, TracebackType | None],
) -> str:
    kind, error, trace = info
    if isinstance(error, StatementError):
        # "(psycopg.errors.X) ... [SQL: ...] [parameters: ...]": keep the driver's message only.
        original = error.orig
        message = f"{type(original).__name__}: {original}" if original else kind.__name__
        message = message.strip().splitlines()[0] if message.strip() else kind.__name__
        return "".join(traceback.format_tb(trace)) + f"{kind.__name__}: {message}"
    return "".join(traceback.format_exception(kind, error, trace))


class JsonFormatter(logging.Formatter):
    """One JSON object per record."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id:
            data["request_id"] = request_id
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_") and key not in data:
                data[key] = value
        if record.exc_info and record.exc_info[1] is not None:
            data["exception"] = _exception_text(record.exc_info)
        return json.dumps(data, ensure_ascii=False, default=str)


def configure_logging(level: str = "info") -> None:
    """JSON lines on standard error for mailconnect and uvicorn; uvicorn's access log is off
    (the service writes its own access lines, with the request id)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers = []
        logger.propagate = True
    # Quiet by design: httpx logs full URLs (a webhook URL's query may hold the tenant's token)
    # and aiosmtpd (the demo's capture server) logs protocol lines.
    for name in ("alembic", "httpx", "httpcore", "mail.log"):
        logging.getLogger(name).setLevel(logging.WARNING)
    access = logging.getLogger("uvicorn.access")
    access.handlers = []
    access.propagate = False
    access.disabled = True
