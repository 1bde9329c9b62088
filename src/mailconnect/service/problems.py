"""Every error the API returns is an RFC 9457 problem (``application/problem+json``).

A problem has ``type`` (a URN naming the kind, stable for code to match), ``title`` (the same for
every problem of that type), ``status``, ``detail`` (this occurrence, in plain language),
``instance`` (the request path) and ``request_id``. Problems about input add ``errors``: one entry
per field, each with ``field`` (``to[0]``, ``sender.address``, ``Idempotency-Key``), ``problem``
and ``fix``; ``field`` at the top names the first. The handlers here turn FastAPI's validation
errors, HTTP errors, mailconnect's own exceptions and anything unexpected into problems; an
unexpected error is logged with its traceback and answered with a 500 that says nothing else.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from mailconnect.errors import ConfigurationError, NotFound, SecretError
from mailconnect.service.logs import current_request_id

__all__ = [
    "PROBLEM_MEDIA_TYPE",
    "Problem",
    "field_path",
    "install_handlers",
    "problem_response",
]

PROBLEM_MEDIA_TYPE = "application/problem+json"
_TYPE_PREFIX = "urn:mailconnect:problem:"
log = logging.getLogger("mailconnect.service")

# kind -> (status, title)
KINDS: dict[str, tuple[int, str]] = {
    "bad-request": (400, "The request cannot be read"),
    "unauthorized": (401, "An API key is needed"),
    "forbidden": (403, "This key may not do that"),
    "not-found": (404, "Not found"),
    "method-not-allowed": (405, "Method not allowed"),
    "not-acceptable": (406, "Not acceptable"),
    "conflict": (409, "Conflict"),
    "too-large": (413, "The request body is too large"),
    "unsupported-media-type": (415, "Send JSON"),
    "invalid-request": (422, "The request has invalid fields"),
    "settings-refused": (422, "These settings cannot work"),
    "rate-limited": (429, "Too many requests"),
    "internal": (500, "Internal error"),
    "unavailable": (503, "Not ready"),
    "secret-unusable": (409, "A stored secret cannot be used"),
}


class Problem(Exception):
    """Raise anywhere in a request to answer with a problem of ``kind``."""

    def __init__(
        self,
        kind: str,
        detail: str,
        *,
        errors: Sequence[dict[str, Any]] = (),
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail
        self.errors = list(errors)
        self.headers = headers or {}
        self.extensions = extensions

    @classmethod
    def invalid(cls, field: str, problem: str, fix: str) -> Problem:
        return cls(
            "invalid-request",
            f"{field}: {problem}",
            errors=[{"field": field, "problem": problem, "fix": fix}],
        )

    @classmethod
    def not_found(cls, kind: str) -> Problem:
        return cls("not-found", f"no such {kind}")


def problem_response(
    request: Request | None,
    kind: str,
    detail: str,
    *,
    errors: Sequence[dict[str, Any]] = (),
    headers: dict[str, str] | None = None,
    **extensions: Any,
) -> JSONResponse:
    status, title = KINDS[kind]
    body: dict[str, Any] = {
        "type": _TYPE_PREFIX + kind,
        "title": title,
        "status": status,
        "detail": detail,
    }
    if request is not None:
        body["instance"] = request.url.path
    request_id = current_request_id()
    if request_id:
        body["request_id"] = request_id
    if errors:
        body["field"] = errors[0]["field"]
        body["errors"] = list(errors)
    body.update(extensions)
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_MEDIA_TYPE)


def field_path(location: Sequence[int | str], *, skip_source: bool = True) -> str:
    """``("body", "to", 0, "address")`` -> ``to[0].address``; a header keeps its HTTP name."""
    parts = list(location)
    source = parts[0] if parts else ""
    if skip_source and source in {"body", "query", "path", "header", "cookie"}:
        parts = parts[1:]
    if source == "header" and parts:
        return "-".join(word.capitalize() for word in str(parts[0]).replace("_", "-").split("-"))
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part:
            text += f".{part}" if text else str(part)
    return text or "body"


_FIXES = {
    "extra_forbidden": "remove this field: it is not part of the API (see /openapi.json)",
    "missing": "add this field",
    "json_invalid": "send a valid JSON document",
}


_SCALAR_TAGS = frozenset(
    {"str", "int", "float", "bool", "bytes", "none", "uuid", "list", "dict"}
    | {f"constrained-{kind}" for kind in ("str", "int", "float", "bytes", "list")}
)
_WRAPPER_PREFIXES = ("function-", "lax-", "strict-", "json-or-python", "nullable", "union[")


def _is_tag(part: int | str) -> bool:
    """A location part that names a union member or a validator wrapper, not a JSON field."""
    if not isinstance(part, str):
        return False
    if part in _SCALAR_TAGS or part.startswith(_WRAPPER_PREFIXES):
        return True
    return part in _model_names()


@functools.cache
def _model_names() -> frozenset[str]:
    from pydantic import BaseModel

    from mailconnect.service import schemas

    return frozenset(
        name
        for name, value in vars(schemas).items()
        if isinstance(value, type) and issubclass(value, BaseModel)
    )


def _branch(location: Sequence[int | str]) -> tuple[tuple[int | str, ...], str | None]:
    """The location before the first union-member tag, and that tag (None: no union)."""
    for index, part in enumerate(location):
        if _is_tag(part) and not str(part).startswith(_WRAPPER_PREFIXES):
            return tuple(location[:index]), str(part)
    return tuple(location), None


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    raw = list(exc.errors())
    branches = [_branch(list(e.get("loc", ()))) for e in raw]
    # A union reports every member's failure. When a member's shape matched (its errors are
    # about the inside) keep those, and drop "wrong type" errors of the other members there.
    detailed = {
        prefix
        for (prefix, tag), e in zip(branches, raw, strict=True)
        if tag is not None and not str(e.get("type", "")).endswith("_type")
    }
    errors: list[dict[str, Any]] = []
    for (prefix, tag), error in zip(branches, raw, strict=True):
        kind = str(error.get("type", ""))
        if tag is not None and prefix in detailed and kind.endswith("_type"):
            continue
        location = [p for p in error.get("loc", ()) if not _is_tag(p)]
        message = str(error.get("msg", "invalid value"))
        if kind == "extra_forbidden":
            message = "unknown field"
        elif message.startswith("Value error, "):
            message = message.removeprefix("Value error, ")
        entry = {
            "field": field_path(location),
            "problem": message,
            "fix": _FIXES.get(kind, "correct the value"),
        }
        if entry not in errors:
            errors.append(entry)
    return errors or [{"field": "body", "problem": "invalid request", "fix": "check the body"}]


def configuration_problem(exc: ConfigurationError, prefix: str = "") -> Problem:
    field = f"{prefix}{exc.field}" if prefix else exc.field
    return Problem(
        "invalid-request",
        f"{field}: {exc.problem}",
        errors=[{"field": field, "problem": exc.problem, "fix": exc.fix}],
    )


def install_handlers(app: FastAPI) -> None:
    """Register the handlers that turn every error into a problem response."""

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(
            request,
            exc.kind,
            exc.detail,
            errors=exc.errors,
            headers=exc.headers,
            **exc.extensions,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _validation_errors(exc)
        if any(e["problem"].startswith("JSON decode error") for e in errors):
            return problem_response(
                request,
                "bad-request",
                "the body is not valid JSON",
                errors=[
                    {"field": "body", "problem": "not valid JSON", "fix": _FIXES["json_invalid"]}
                ],
            )
        detail = "; ".join(f"{e['field']}: {e['problem']}" for e in errors[:5])
        return problem_response(request, "invalid-request", detail, errors=errors)

    @app.exception_handler(ConfigurationError)
    async def _configuration(request: Request, exc: ConfigurationError) -> JSONResponse:
        problem = configuration_problem(exc)
        return problem_response(request, problem.kind, problem.detail, errors=problem.errors)

    @app.exception_handler(NotFound)
    async def _not_found(request: Request, exc: NotFound) -> JSONResponse:
        return problem_response(request, "not-found", f"no such {exc.kind}")

    @app.exception_handler(SecretError)
    async def _secret(request: Request, exc: SecretError) -> JSONResponse:
        log.error("stored secret unusable", extra={"error": str(exc)})
        return problem_response(
            request,
            "secret-unusable",
            "the stored password of this connection cannot be decrypted; enter it again "
            "(PATCH the connection with a new password)",
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = {
            400: "bad-request",
            401: "unauthorized",
            403: "forbidden",
            404: "not-found",
            405: "method-not-allowed",
            406: "not-acceptable",
            409: "conflict",
            413: "too-large",
            415: "unsupported-media-type",
            429: "rate-limited",
            503: "unavailable",
        }.get(exc.status_code)
        if kind is None:
            kind = "bad-request" if exc.status_code < 500 else "internal"
        detail = str(exc.detail) if exc.detail else KINDS[kind][1]
        if exc.status_code == 404:
            detail = "no such resource"
        headers = dict(exc.headers) if exc.headers else None
        return problem_response(request, kind, detail, headers=headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error(
            "unexpected error",
            exc_info=(type(exc), exc, exc.__traceback__),
            extra={"path": request.url.path},
        )
        return problem_response(request, "internal", "an unexpected error occurred")
