"""ASGI middleware: request ids, access logs and metrics, and the body size limit.

Written as plain ASGI (not Starlette's BaseHTTPMiddleware) to stay off the hot path's budget.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mailconnect.service.logs import request_id_var, safe_request_id
from mailconnect.service.metrics import Metrics
from mailconnect.service.problems import KINDS, PROBLEM_MEDIA_TYPE

__all__ = ["BodyLimit", "RequestContext"]

access = logging.getLogger("mailconnect.access")


class _TooLarge(Exception):
    pass


def _problem_bytes(kind: str, detail: str, path: str, request_id: str | None) -> bytes:
    status, title = KINDS[kind]
    body: dict[str, Any] = {
        "type": f"urn:mailconnect:problem:{kind}",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": path,
    }
    if request_id:
        body["request_id"] = request_id
    return json.dumps(body).encode()


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413 (by Content-Length or as they stream).

    The rest of the body is read and thrown away first (up to ``drain`` bytes): a server that
    answers and closes while the client is still sending makes the client's TCP stack discard
    the answer, and the client would see a reset instead of the 413.
    """

    def __init__(self, app: ASGIApp, limit: int, drain: int = 64 * 1024 * 1024) -> None:
        self.app = app
        self.limit = limit
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.limit:
            await self._discard(receive, 0)
            await self._refuse(scope, send)
            return
        received = 0
        started = False
        finished = False

        async def limited_receive() -> Message:
            nonlocal received, finished
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                finished = not message.get("more_body", False)
                if received > self.limit:
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if started:
                raise
            if not finished:
                await self._discard(receive, received)
            await self._refuse(scope, send)

    async def _discard(self, receive: Receive, already: int) -> None:
        total = already
        while total <= self.drain:
            message = await receive()
            if message["type"] != "http.request":
                return
            total += len(message.get("body", b""))
            if not message.get("more_body", False):
                return

    async def _refuse(self, scope: Scope, send: Send) -> None:
        detail = f"the body is larger than {self.limit} bytes (MAILCONNECT_MAX_BODY_BYTES)"
        body = _problem_bytes("too-large", detail, scope.get("path", ""), request_id_var.get())
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _header(scope: Scope, wanted: bytes) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == wanted:
            try:
                return str(value.decode("latin-1"))
            except UnicodeDecodeError:
                return None
    return None


class RequestContext:
    """Give every request an id (``X-Request-Id``), log one access line, count it."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = safe_request_id(_header(scope, b"x-request-id")) or uuid.uuid4().hex
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500
        state = scope.setdefault("state", {})

        status_sent = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, status_sent
            if message["type"] == "http.response.start":
                status = int(message["status"])
                status_sent = True
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            # Anything no handler turned into a problem: log it with the request id and answer
            # a 500 that says nothing else (when the response has not started yet).
            access.exception("unexpected error", extra={"path": scope.get("path", "")})
            if status_sent:
                raise
            status = 500
            body = _problem_bytes(
                "internal", "an unexpected error occurred", scope.get("path", ""), request_id
            )
            await send(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [
                        (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
                        (b"content-length", str(len(body)).encode()),
                        (b"x-request-id", request_id.encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            self.metrics.requests.labels(method=method, route=template, status=str(status)).inc()
            self.metrics.request_seconds.labels(method=method, route=template).observe(elapsed)
            tenant = state.get("tenant_id")
            access.info(
                "request",
                extra={
                    "method": method,
                    "path": scope.get("path", ""),
                    "route": template,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 2),
                    "tenant_id": str(tenant) if tenant else None,
                },
            )
            request_id_var.reset(token)
