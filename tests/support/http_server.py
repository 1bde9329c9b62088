"""A loopback HTTP server for tests: configurable paths, status codes, headers and slow answers.

Usage::

    with HttpServer() as http:
        http.route("/mail/config-v1.1.xml", body=b"<clientConfig .../>")
        http.route("/moved", status=302, headers={"Location": "/mail/config-v1.1.xml"})
        http.route("/slow", body=b"...", delay=10.0)
        url = http.url("/mail/config-v1.1.xml")

or the ``http_server`` pytest fixture. Unknown paths answer 404. Routes match the path without
its query string; every request's full path is logged in :attr:`HttpServer.requests` and its
``Host`` header in :attr:`HttpServer.hosts`. A slow answer waits ``delay`` seconds (less if the
server stops) before it sends anything.

``HttpServer(tls=context)`` serves https with a server-side :class:`ssl.SSLContext` (a trustme
certificate, say); the SNI name of every handshake is logged in :attr:`HttpServer.sni_names`.
``url(path, host="autoconfig.{domain}")`` puts a name (or a template) in place of 127.0.0.1.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

import pytest

__all__ = ["HttpServer", "Route", "http_server"]


@dataclass(frozen=True)
class Route:
    status: int = 200
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    content_type: str = "application/xml"
    send_length: bool = True  # False: no Content-Length, the body ends when the connection closes


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: HttpServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that gave up (a timeout test) is expected: stay quiet."""


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        owner = self.server.owner
        route = owner.requested(self.path, self.headers.get("Host"))
        if route.delay and owner.stopping.wait(route.delay):
            return
        self.send_response(route.status)
        self.send_header("Content-Type", route.content_type)
        if route.send_length:
            self.send_header("Content-Length", str(len(route.body)))
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        for name, value in route.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(route.body)

    def log_message(self, format: str, *args: Any) -> None:
        """No access log on stderr."""


class HttpServer:
    """A threaded HTTP/1.1 server (https with ``tls``) on 127.0.0.1 with an ephemeral port."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.requests: list[str] = []
        self.hosts: list[str | None] = []  # the Host header of each request, in order
        self.sni_names: list[str | None] = []  # the SNI name of each TLS handshake, in order
        self.stopping = threading.Event()
        self._routes: dict[str, Route] = {}
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self.scheme = "http"
        if tls is not None:
            tls.sni_callback = self._sni
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
            self.scheme = "https"
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._started = False

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    def route(
        self,
        path: str,
        *,
        body: bytes = b"",
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        delay: float = 0.0,
        content_type: str = "application/xml",
        send_length: bool = True,
    ) -> None:
        route = Route(status, body, dict(headers or {}), delay, content_type, send_length)
        with self._lock:
            self._routes[path] = route

    def requested(self, full_path: str, host: str | None = None) -> Route:
        with self._lock:
            self.requests.append(full_path)
            self.hosts.append(host)
            return self._routes.get(full_path.partition("?")[0], Route(status=404))

    def _sni(self, _socket: ssl.SSLObject, name: str | None, _context: ssl.SSLContext) -> None:
        with self._lock:
            self.sni_names.append(name)

    def start(self) -> HttpServer:
        self._started = True
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        if self._started:
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()

    def __enter__(self) -> HttpServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


@pytest.fixture
def http_server() -> Iterator[HttpServer]:
    """A started loopback HTTP server with no routes: every path answers 404 until routed."""
    with HttpServer() as server:
        yield server
