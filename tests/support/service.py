"""The real service in a subprocess on loopback, and the peers its tests need.

``start_service(...)`` runs ``python -m mailconnect.service --port 0`` (the same code as
``mailconnect serve``) with a data directory, a database URL and test settings: the network guard
on with the allowlist 127.0.0.0/8, the SMTP and webhook ports the test peers use, the test CA
trusted for SMTP and fast webhook retries. It reads the port from the first line the service
prints, waits for ``/readyz`` and returns a :class:`Service` (stop it with ``stop()``; its JSON log
lines are in ``log_path``).

Peers, each on 127.0.0.1 with ports chosen before the service starts (so they can be allowed):

``SmtpSink``
    an aiosmtpd server in a thread of its own, STARTTLS with the test CA and AUTH (USER and
    PASSWORD from smtp_servers); recipients whose local part starts with ``reject`` get a
    ``550 5.1.1`` at RCPT, so a message to them fails for good.
``Receiver``
    a webhook receiver (http.server in a thread) that records every POST with its headers and
    raw body; it can be started after the events begin, to play a receiver that was down.

The ``service_db`` fixture is module-scoped and parametrized like ``database_url``: SQLite in a
temporary directory, or a fresh schema in the session's PostgreSQL database.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.smtp import SMTP as SmtpProtocol
from aiosmtpd.smtp import AuthResult, LoginPassword
from tests.support.databases import postgres_schema
from tests.support.dns_server import DnsServer
from tests.support.smtp_servers import PASSWORD, USER, pki

__all__ = [
    "OPERATOR_TOKEN",
    "Receiver",
    "Service",
    "SmtpSink",
    "Stack",
    "Tenant",
    "free_port",
    "service_db",
    "stack",
    "start_service",
    "wait_for",
]

HOST = "127.0.0.1"
OPERATOR_TOKEN = "operator-token-for-tests-0123456789abcdef"


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
    return port


def wait_for(condition: Any, timeout: float = 20.0, interval: float = 0.1) -> Any:
    """Poll ``condition()`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {condition}")
        time.sleep(interval)


# --- the database -------------------------------------------------------------------------------


@pytest.fixture(
    scope="module",
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
def service_db(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A database URL for one module's service: SQLite, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        directory = tmp_path_factory.mktemp("service-db")
        yield f"sqlite:///{directory / 'mailconnect.db'}"
        return
    with postgres_schema(request.getfixturevalue("postgres_database"), "svc") as url:
        yield url


# --- the service --------------------------------------------------------------------------------


@dataclass
class Service:
    url: str
    process: subprocess.Popen[str]
    log_path: Path
    data_dir: Path
    database_url: str
    banner_lines: list[str]
    operator_token: str = OPERATOR_TOKEN

    @property
    def banner(self) -> str:
        return "".join(self.banner_lines)

    def client(self, token: str | None = None, **options: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30.0, **options)

    def operator(self) -> httpx.Client:
        return self.client(self.operator_token)

    def logs(self) -> str:
        return self.log_path.read_text("utf-8", errors="replace")

    def log_records(self) -> list[dict[str, Any]]:
        records = []
        for line in self.logs().splitlines():
            with contextlib.suppress(ValueError):
                records.append(json.loads(line))
        return records

    def new_tenant(
        self, name: str | None = None, scopes: tuple[str, ...] = ("send", "manage")
    ) -> tuple[str, str]:
        """A new tenant and an API key for it: (tenant id, key)."""
        external = name or f"t-{secrets.token_hex(4)}"
        with self.operator() as client:
            tenant = client.post("/v1/tenants", json={"external_id": external, "name": external})
            assert tenant.status_code == 201, tenant.text
            tenant_id = tenant.json()["id"]
            key = client.post(
                f"/v1/tenants/{tenant_id}/keys", json={"name": "test", "scopes": list(scopes)}
            )
            assert key.status_code == 201, key.text
        return tenant_id, key.json()["key"]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        if self.process.stdout is not None:
            self.process.stdout.close()


def service_env(
    database_url: str,
    data_dir: Path,
    *,
    smtp_ports: tuple[int, ...] = (),
    webhook_ports: tuple[int, ...] = (),
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILCONNECT_")}
    env.update(
        {
            "MAILCONNECT_DATA_DIR": str(data_dir),
            "MAILCONNECT_DATABASE_URL": database_url,
            "MAILCONNECT_OPERATOR_TOKEN": OPERATOR_TOKEN,
            "MAILCONNECT_ALLOW_NETWORKS": "127.0.0.0/8",
            "MAILCONNECT_ALLOWED_PORTS": ",".join(
                str(p) for p in (25, 465, 587, 2525, *smtp_ports)
            ),
            "MAILCONNECT_WEBHOOK_PORTS": ",".join(str(p) for p in webhook_ports) or "8443",
            "MAILCONNECT_SMTP_CA_FILE": str(pki().ca_file),
            "MAILCONNECT_WEBHOOK_RETRY_SECONDS": "0.5",
            "MAILCONNECT_WEBHOOK_MAX_ATTEMPTS": "4",
            "MAILCONNECT_EVENT_POLL_SECONDS": "0.2",
            "MAILCONNECT_LOG_LEVEL": "info",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra or {})
    return env


def start_service(
    database_url: str,
    data_dir: Path,
    *,
    args: tuple[str, ...] = (),
    smtp_ports: tuple[int, ...] = (),
    webhook_ports: tuple[int, ...] = (),
    extra_env: dict[str, str] | None = None,
    timeout: float = 60.0,
) -> Service:
    """Start ``python -m mailconnect.service --port 0 ARGS`` and wait until it is ready."""
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / f"service-{secrets.token_hex(3)}.log"
    env = service_env(
        database_url, data_dir, smtp_ports=smtp_ports, webhook_ports=webhook_ports, extra=extra_env
    )
    log_file = log_path.open("w", encoding="utf-8")
    process = subprocess.Popen(
        [sys.executable, "-m", "mailconnect.service", "--port", "0", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=log_file,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    log_file.close()
    assert process.stdout is not None
    first = _read_line(process, timeout)
    if not first.startswith("mailconnect listening on "):
        process.kill()
        process.wait()
        pytest.fail(f"the service did not start: {first!r}\n{log_path.read_text()[-4000:]}")
    url = first.removeprefix("mailconnect listening on ").strip()
    banner = [first]
    service = Service(url, process, log_path, data_dir, database_url, banner)
    threading.Thread(target=_drain, args=(process, banner), daemon=True).start()

    def ready() -> bool:
        try:
            return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(ready, timeout=timeout)
    return service


def _read_line(process: subprocess.Popen[str], timeout: float) -> str:
    assert process.stdout is not None
    result: list[str] = []
    reader = threading.Thread(target=lambda: result.append(process.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout)
    return result[0] if result else ""


def _drain(process: subprocess.Popen[str], lines: list[str]) -> None:
    assert process.stdout is not None
    with contextlib.suppress(ValueError, OSError):
        for line in process.stdout:
            lines.append(line)


# --- an SMTP server that keeps what it accepts --------------------------------------------------


@dataclass
class Accepted:
    mail_from: str
    rcpt_tos: list[str]
    content: bytes


@dataclass
class _SinkHandler:
    messages: list[Accepted] = field(default_factory=list)
    logins: int = 0

    def authenticator(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        ok = (
            isinstance(data, LoginPassword)
            and data.login.decode() == USER
            and data.password.decode() == PASSWORD
        )
        if ok:
            self.logins += 1
        return AuthResult(success=ok, handled=False)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address.lower().startswith("reject"):
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(
            Accepted(envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.original_content))
        )
        return "250 2.0.0 Ok: queued as T3ST"


class SmtpSink:
    """aiosmtpd with STARTTLS and AUTH, in a thread with its own event loop."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.handler = _SinkHandler()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.base_events.Server | None = None

    @property
    def messages(self) -> list[Accepted]:
        return self.handler.messages

    def start(self) -> SmtpSink:
        self._thread.start()
        context = pki().server_context()
        handler = self.handler

        def factory() -> SmtpProtocol:
            return SmtpProtocol(
                handler,
                hostname="sink.acme.test",
                loop=self._loop,
                tls_context=context,
                require_starttls=True,
                auth_require_tls=True,
                authenticator=handler.authenticator,
                enable_SMTPUTF8=True,
            )

        async def create() -> asyncio.base_events.Server:
            return await self._loop.create_server(factory, HOST, self.port)

        self._server = asyncio.run_coroutine_threadsafe(create(), self._loop).result(10)
        return self

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._server.wait_closed(), 2)

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
        self._loop.close()

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- a webhook receiver -------------------------------------------------------------------------


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.body)
        return data


class Receiver:
    """Records POSTs; answers ``status`` (204 by default). Start it late to play 'down'."""

    def __init__(self, port: int | None = None, status: int = 204) -> None:
        self.port = port or free_port()
        self.status = status
        self.deliveries: list[Delivery] = []
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/hooks/mailconnect?token=abc"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                receiver.deliveries.append(Delivery(self.path, dict(self.headers.items()), body))
                self.send_response(receiver.status)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer((HOST, self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def events(self, kind: str | None = None) -> list[Delivery]:
        return [d for d in self.deliveries if kind is None or d.event.get("type") == kind]


# --- module fixtures: one running service per test module and database -------------------------


@dataclass
class Stack:
    """A running service with its peers: the SMTP sink, webhook ports and the DNS server."""

    service: Service
    sink: SmtpSink
    webhook_ports: tuple[int, ...]
    dns: DnsServer

    def tenant(self, scopes: tuple[str, ...] = ("send", "manage")) -> Tenant:
        tenant_id, key = self.service.new_tenant(scopes=scopes)
        return Tenant(tenant_id, key, self)


@dataclass
class Tenant:
    id: str
    key: str
    stack: Stack

    def client(self) -> httpx.Client:
        return self.stack.service.client(self.key)

    def connection(self, **overrides: Any) -> dict[str, Any]:
        """A connection to the SMTP sink (created through the API)."""
        body: dict[str, Any] = {
            "name": f"jobs-{secrets.token_hex(3)}",
            "host": HOST,
            "port": self.stack.sink.port,
            "security": "starttls",
            "auth": "password",
            "username": USER,
            "password": PASSWORD,
            "sender": {"address": "jobs@acme.com", "display_name": "Acme Jobs"},
        }
        body.update(overrides)
        with self.client() as client:
            response = client.post("/v1/connections", json=body)
        assert response.status_code == 201, response.text
        data: dict[str, Any] = response.json()
        return data


@pytest.fixture(scope="module")
def stack(service_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    webhook_ports = (free_port(), free_port(), free_port())
    with SmtpSink() as sink, DnsServer() as dns:
        service = start_service(
            service_db,
            tmp_path_factory.mktemp("service"),
            smtp_ports=(sink.port,),
            webhook_ports=webhook_ports,
            extra_env={"MAILCONNECT_DNS_NAMESERVER": dns.address},
        )
        try:
            yield Stack(service, sink, webhook_ports, dns)
        finally:
            service.stop()
