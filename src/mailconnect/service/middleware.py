"""ASGI middleware: request ids, access logs and metrics, and the body size limit.

Written as plain ASGI (not Starlette's BaseHTTPMiddleware) to stay off the hot path's budget.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mailconnect.service.logs import request_id_var, safe_request_id
from mailconnect.service.metrics import Metrics
from mailconnect.service.problems import KINDS, PROBLEM_MEDIA_TYPE

__all__ = ["BodyLimit", "RequestContext"]

access = logging.getLogger("mailconnect.access")
_MAX_CHILDREN = 1000  # label sets whose metric children are kept (methods come from clients)


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
        declared, counted = _framing(scope)
        if declared is not None and declared > self.limit:
            await self._discard(receive, 0)
            await self._refuse(scope, send)
            return
        if declared is not None and not counted:
            # The HTTP server reads exactly Content-Length bytes of body (the rest would be the
            # next request), and that is within the limit: nothing to count.
            await self.app(scope, receive, send)
            return
        received = 0
        started = False
        finished = False
        exceeded = False

        async def limited_receive() -> Message:
            nonlocal received, finished, exceeded
            if exceeded:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                finished = not message.get("more_body", False)
                if received > self.limit:
                    exceeded = True
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if exceeded and not started:
                # The app's answer to a body it could not read (FastAPI turns any error while
                # reading it into a 400): replaced by the 413 below.
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except Exception:
            if not exceeded or started:
                raise
        if exceeded and not started:
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


def _framing(scope: Scope) -> tuple[int | None, bool]:
    """The declared Content-Length (None: absent or not a number) and whether the body must be
    counted as it comes anyway: a Transfer-Encoding (it frames the body, whatever the length
    says), a length given twice or not as plain digits."""
    length: int | None = None
    counted = False  # the bytes must be counted as they come
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            if length is not None or not value.isdigit():  # twice, or not a plain number
                counted = True
            try:
                length = int(value)
            except ValueError:
                length = None
        elif name == b"transfer-encoding":
            counted = True
    return length, counted


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
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

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
            counter, histogram = self._instruments(method, template, status)
            counter.inc()
            histogram.observe(elapsed)
            if access.isEnabledFor(logging.INFO):
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

    def _instruments(self, method: str, route: str, status: int) -> tuple[Counter, Histogram]:
        """The counter and histogram children for these labels (``labels()`` costs a lock and a
        lookup per call; the children are kept here)."""
        key = (method, route, status)
        found = self._children.get(key)
        if found is None:
            found = (
                self.metrics.requests.labels(method=method, route=route, status=str(status)),
                self.metrics.request_seconds.labels(method=method, route=route),
            )
            if len(self._children) < _MAX_CHILDREN:
                self._children[key] = found
        return found
