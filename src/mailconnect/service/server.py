"""Running the service: bind, check, print what the operator needs, serve with uvicorn.

:func:`serve` is what ``mailconnect serve`` calls. The listening socket is bound before anything
else, so ``--port 0`` works (the chosen port is printed) and a port in use is reported at once.
The first line on standard output is always ``mailconnect listening on http://HOST:PORT``; logs
go to standard error as JSON lines.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from typing import TextIO

import uvicorn

from mailconnect.service.app import create_app
from mailconnect.service.logs import configure_logging
from mailconnect.service.runtime import Runtime, check_settings
from mailconnect.service.settings import ServiceSettings

__all__ = ["bind", "serve"]


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host``:``port`` (0 = any free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY only on sockets that say so, and without it
    # a response written in two parts waits for the client's delayed ACK (40 ms a request).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


def serve(settings: ServiceSettings, *, demo: bool = False, out: TextIO | None = None) -> None:
    """Start the service and block until it is stopped (SIGINT or SIGTERM).

    Raises ConfigurationError (bad settings), StartupRefused (a key is missing) or OSError
    (the port cannot be bound) before serving.
    """
    out = out or sys.stdout
    configure_logging(settings.log_level)
    check_settings(settings)
    sock = bind(settings.host, settings.port)
    try:
        runtime = Runtime.open(settings)
    except BaseException:
        sock.close()
        raise
    port = int(sock.getsockname()[1])
    url = _url(settings.host, port)
    lines = [f"mailconnect listening on {url}"]
    lines.append(f"  database: {settings.database_url_for_display()}")
    worker = f"{settings.workers} concurrent sends" if settings.workers else "off (--workers 0)"
    lines.append(f"  worker: {worker}; API docs: {url}/docs")
    if runtime.operator_token_created:
        lines.append(
            f"  operator token (shown once; kept in {settings.data_dir / 'operator.token'}): "
            f"{runtime.operator_token}"
        )
    if demo:
        from mailconnect.service.demo import Demo

        runtime.demo = Demo(runtime, port)
        info = runtime.demo.prepare()
        lines += [
            "",
            f"Demo: a capture SMTP server on 127.0.0.1:{info.smtp_port} (STARTTLS, AUTH), "
            "a tenant 'demo', an API key and a connection to it.",
            "Send your first e-mail:",
            "",
            info.curl(),
            "",
            f"Then see it at {info.page_url} (files in {info.inbox}).",
            f"API key for the demo tenant: {info.api_key}",
        ]
    out.write("\n".join(lines) + "\n")
    out.flush()
    app = create_app(runtime)
    # HTTP parsing: uvicorn takes httptools (C, a dependency) when it is installed, else h11.
    # The event loop stays asyncio's own (not uvloop): the final-dot watch relies on the
    # standard transports' write-buffer behaviour (see mailconnect.smtp._finaldot).
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="on",
        server_header=False,
        timeout_graceful_shutdown=10,
        proxy_headers=False,
    )
    server = uvicorn.Server(config)
    try:
        asyncio.run(server.serve(sockets=[sock]))
    finally:
        sock.close()
        runtime.close()
