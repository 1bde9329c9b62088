"""``mailconnect serve --demo``: everything needed to send a first e-mail, on this machine only.

What it sets up, each time the service starts with ``--demo``:

- a CA and a server certificate for ``localhost``/``127.0.0.1``, made here with ``cryptography``
  (``<data dir>/demo/ca.pem``), which the service's worker trusts for this run;
- a capture SMTP server (aiosmtpd) on 127.0.0.1 and a free port, which requires STARTTLS and
  AUTH (a random password) and keeps every message it accepts as a ``.eml`` file in
  ``<data dir>/demo/inbox`` (and in memory, for the page);
- a tenant ``demo``, a new API key for it (older demo keys are revoked), a connection ``demo``
  pointing at the capture server, and a webhook that posts events to the demo page itself;
- ``/demo``: a page listing the captured messages and the webhook events received (with whether
  their signatures check out); ``/demo/messages.json`` and ``/demo/events.json`` for scripts.

The network guard stays on; for this run it also allows 127.0.0.1 on the capture server's port
(SMTP) and on the service's own port (the demo webhook). Nothing listens beyond loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import html
import ipaddress
import json
import logging
import secrets
import socket
import ssl
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field, replace
from email import message_from_bytes
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP as SmtpProtocol
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from fastapi import FastAPI, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from sqlalchemy import select

from mailconnect.crypto import Secret
from mailconnect.netguard import GuardPolicy
from mailconnect.service.auth import make_key
from mailconnect.service.runtime import Runtime
from mailconnect.service.webhooks import SIGNATURE_HEADER, secret_binding, verify_signature
from mailconnect.settings import ConnectionSettings
from mailconnect.smtp import TlsPolicy
from mailconnect.store import (
    create_connection,
    create_tenant,
    get_tenant_by_external_id,
    store_secret,
    update_connection,
)
from mailconnect.store.ids import new_id
from mailconnect.store.models import Connection
from mailconnect.store.service_models import ApiKey, Webhook
from mailconnect.store.types import utcnow

__all__ = ["Demo", "DemoInfo", "make_pki"]

LOOPBACK = "127.0.0.1"
TENANT = "demo"
CONNECTION = "demo"
SENDER = "jobs@demo.example"
USERNAME = "jobs@demo.example"
_KEEP = 200


class _QuietDeprecation(logging.Filter):
    """aiosmtpd sets its own deprecated ``Session.login_data`` after every successful AUTH and
    warns about it, to the demo's operator, who can do nothing about it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "login_data is deprecated" not in record.getMessage()


_AIOSMTPD_LOG = logging.getLogger("mail.log")
if not any(isinstance(f, _QuietDeprecation) for f in _AIOSMTPD_LOG.filters):
    _AIOSMTPD_LOG.addFilter(_QuietDeprecation())


@dataclass(frozen=True, slots=True)
class Pki:
    ca_file: Path
    server_file: Path  # key and certificate chain, PEM


def make_pki(directory: Path) -> Pki:
    """A new CA and a server certificate for localhost and 127.0.0.1 (valid for 30 days)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mailconnect demo CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address(LOOPBACK)),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = directory / "ca.pem"
    ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    server_file = directory / "server.pem"
    server_file.touch(mode=0o600)
    server_file.chmod(0o600)
    server_file.write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        + server_cert.public_bytes(serialization.Encoding.PEM)
    )
    return Pki(ca_file=ca_file, server_file=server_file)


@dataclass
class Captured:
    number: int
    received_at: str
    mail_from: str
    rcpt_tos: list[str]
    subject: str
    size: int
    file: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "received_at": self.received_at,
            "mail_from": self.mail_from,
            "rcpt_tos": self.rcpt_tos,
            "subject": self.subject,
            "size": self.size,
            "file": self.file,
        }


@dataclass
class _Capture:
    """The aiosmtpd handler: one account, and every message it accepts."""

    inbox: Path
    username: str
    password: str
    messages: deque[Captured] = field(default_factory=lambda: deque(maxlen=_KEEP))
    lock: threading.Lock = field(default_factory=threading.Lock)
    count: int = 0

    def authenticator(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        ok = (
            isinstance(data, LoginPassword)
            and secrets.compare_digest(data.login, self.username.encode())
            and secrets.compare_digest(data.password, self.password.encode())
        )
        return AuthResult(success=ok, handled=False)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content = bytes(envelope.original_content or envelope.content or b"")
        with self.lock:
            self.count += 1
            number = self.count
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = self.inbox / f"{stamp}-{number:05d}.eml"
        await asyncio.to_thread(path.write_bytes, content)
        parsed = message_from_bytes(content, policy=default_policy)
        self.messages.append(
            Captured(
                number=number,
                received_at=utcnow().isoformat(timespec="seconds"),
                mail_from=str(envelope.mail_from),
                rcpt_tos=[str(r) for r in envelope.rcpt_tos],
                subject=str(parsed.get("Subject", "")),
                size=len(content),
                file=str(path),
            )
        )
        return f"250 2.0.0 Ok: captured as message {number}"


@dataclass(frozen=True, slots=True)
class DemoInfo:
    """What the operator is told to paste."""

    base_url: str
    api_key: str
    page_url: str
    inbox: Path
    smtp_port: int
    tenant_id: uuid.UUID
    connection_id: uuid.UUID

    def curl(self) -> str:
        body = json.dumps(
            {
                "to": ["you@example.com"],
                "subject": "Hello from mailconnect",
                "text": "It works: this e-mail went through the demo SMTP server.",
            }
        )
        return (
            f"curl -sS -X POST {self.base_url}/v1/messages \\\n"
            f"  -H 'Authorization: Bearer {self.api_key}' \\\n"
            "  -H 'Content-Type: application/json' \\\n"
            f"  -H 'Idempotency-Key: first-mail-{secrets.token_hex(3)}' \\\n"
            f"  -d '{body}'"
        )


class Demo:
    """The demo's capture server, rows and page (see the module docstring)."""

    def __init__(self, runtime: Runtime, service_port: int) -> None:
        self.runtime = runtime
        self.service_port = service_port
        self.directory = runtime.settings.data_dir / "demo"
        self.events: deque[dict[str, Any]] = deque(maxlen=_KEEP)
        self._webhook_secret = ""
        self._socket: socket.socket | None = None
        self._server: asyncio.base_events.Server | None = None
        self._capture: _Capture | None = None
        self._pki: Pki | None = None
        self.info: DemoInfo | None = None

    # -- set-up (synchronous, before the server starts) ---------------------------------------

    def prepare(self) -> DemoInfo:
        self._pki = make_pki(self.directory)
        inbox = self.directory / "inbox"
        inbox.mkdir(mode=0o700, parents=True, exist_ok=True)
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((LOOPBACK, 0))
        listener.listen(64)
        listener.setblocking(False)
        self._socket = listener
        smtp_port = int(listener.getsockname()[1])
        password = secrets.token_urlsafe(18)
        self._capture = _Capture(inbox=inbox, username=USERNAME, password=password)
        self._widen_guard(smtp_port)
        tenant_id, connection_id, api_key = self._rows(smtp_port, password)
        base = f"http://{LOOPBACK}:{self.service_port}"
        self.info = DemoInfo(
            base_url=base,
            api_key=api_key,
            page_url=f"{base}/demo",
            inbox=inbox,
            smtp_port=smtp_port,
            tenant_id=tenant_id,
            connection_id=connection_id,
        )
        return self.info

    def _widen_guard(self, smtp_port: int) -> None:
        runtime = self.runtime
        loopback = ipaddress.ip_network(f"{LOOPBACK}/32")

        def widen(policy: GuardPolicy, port: int) -> GuardPolicy:
            networks = policy.allow_networks
            if loopback not in networks:
                networks = (*networks, loopback)
            return replace(
                policy, allowed_ports=policy.allowed_ports | {port}, allow_networks=networks
            )

        runtime.guard = widen(runtime.guard, smtp_port)
        runtime.webhook_guard = widen(runtime.webhook_guard, self.service_port)
        assert self._pki is not None
        runtime.tls = TlsPolicy(ca_file=self._pki.ca_file)

    def _rows(self, smtp_port: int, password: str) -> tuple[uuid.UUID, uuid.UUID, str]:
        settings = ConnectionSettings.parse(
            host=LOOPBACK,
            port=smtp_port,
            security="starttls",
            auth="password",
            username=USERNAME,
            sender=SENDER,
            display_name="Demo Jobs",
        )
        runtime = self.runtime
        self._webhook_secret = "whsec_" + secrets.token_urlsafe(32)
        with runtime.sessions.begin() as session:
            tenant = get_tenant_by_external_id(session, TENANT)
            if tenant is None:
                tenant = create_tenant(session, external_id=TENANT, name="Demo company")
            tenant_id = tenant.id
            for key in session.scalars(
                select(ApiKey).where(ApiKey.tenant_id == tenant_id, ApiKey.revoked_at.is_(None))
            ):
                key.revoked_at = utcnow()
            new_key = make_key(session, tenant_id, "demo", ["send", "manage"])
            connection = session.scalar(
                select(Connection).where(
                    Connection.tenant_id == tenant_id, Connection.name == CONNECTION
                )
            )
            if connection is None:
                connection = create_connection(
                    session, tenant_id, name=CONNECTION, settings=settings
                )
            else:
                update_connection(session, tenant_id, connection.id, settings=settings)
            store_secret(session, runtime.keyring, tenant_id, connection.id, Secret(password))
            for old in session.scalars(select(Webhook).where(Webhook.tenant_id == tenant_id)):
                session.delete(old)
            session.flush()
            webhook_id = new_id()
            session.add(
                Webhook(
                    id=webhook_id,
                    tenant_id=tenant_id,
                    url=f"http://{LOOPBACK}:{self.service_port}/demo/events",
                    events=" ".join(
                        [
                            "connection.needs_attention",
                            "message.expired",
                            "message.failed",
                            "message.held",
                            "message.partially_sent",
                            "message.sent",
                            "message.uncertain",
                        ]
                    ),
                    description="the demo page",
                    enabled=True,
                    secret_ciphertext=runtime.keyring.encrypt(
                        Secret(self._webhook_secret), secret_binding(tenant_id, webhook_id)
                    ),
                )
            )
            return tenant_id, connection.id, new_key.token

    # -- the capture server (on the service's event loop) --------------------------------------

    async def start(self) -> None:
        assert self._socket is not None
        assert self._capture is not None
        assert self._pki is not None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self._pki.server_file)
        loop = asyncio.get_running_loop()
        capture = self._capture

        def factory() -> SmtpProtocol:
            return SmtpProtocol(
                capture,
                hostname="capture.demo.example",
                loop=loop,
                tls_context=context,
                require_starttls=True,
                auth_require_tls=True,
                authenticator=capture.authenticator,
                enable_SMTPUTF8=True,
            )

        self._server = await loop.create_server(factory, sock=self._socket)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), timeout=2)

    # -- the page ------------------------------------------------------------------------------

    def messages(self) -> list[dict[str, Any]]:
        if self._capture is None:
            return []
        return [m.as_dict() for m in reversed(self._capture.messages)]

    def install(self, app: FastAPI) -> None:
        demo = self

        @app.get("/demo", include_in_schema=False)
        def page() -> HTMLResponse:
            return HTMLResponse(demo.render())

        @app.get("/demo/messages.json", include_in_schema=False)
        def messages() -> JSONResponse:
            return JSONResponse({"data": demo.messages()})

        @app.get("/demo/events.json", include_in_schema=False)
        def events() -> JSONResponse:
            return JSONResponse({"data": list(reversed(demo.events))})

        @app.post("/demo/events", include_in_schema=False)
        async def receive(request: Request) -> Response:
            body = await request.body()
            if len(body) > 1_000_000:
                return Response(status_code=413)
            valid = verify_signature(
                demo._webhook_secret, request.headers.get(SIGNATURE_HEADER, ""), body
            )
            try:
                event = json.loads(body)
            except ValueError:
                return Response(status_code=400)
            demo.events.append(
                {
                    "received_at": utcnow().isoformat(timespec="seconds"),
                    "signature_valid": valid,
                    "type": event.get("type"),
                    "id": event.get("id"),
                    "data": event.get("data"),
                }
            )
            return Response(status_code=204 if valid else 401)

    def render(self) -> str:
        rows = "".join(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>".format(
                html.escape(m["received_at"]),
                html.escape(m["mail_from"]),
                html.escape(", ".join(m["rcpt_tos"])),
                html.escape(m["subject"]),
                html.escape(Path(m["file"]).name),
            )
            for m in self.messages()
        )
        events = "".join(
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>".format(
                html.escape(e["received_at"]),
                html.escape(str(e["type"])),
                "valid" if e["signature_valid"] else "INVALID",
            )
            for e in reversed(self.events)
        )
        inbox = html.escape(str(self.info.inbox)) if self.info else ""
        return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="3">
<link rel="icon" href="data:,"><title>mailconnect demo</title>
<style>body{{font-family:system-ui,sans-serif;margin:2rem;max-width:70rem}}
table{{border-collapse:collapse;width:100%}}td,th{{border-bottom:1px solid #ddd;padding:.3rem;
text-align:left}}code{{font-size:.9em}}</style></head>
<body><h1>mailconnect demo</h1>
<p>Messages the demo SMTP server captured (newest first). Files: <code>{inbox}</code></p>
<table><tr><th>received</th><th>from</th><th>to</th><th>subject</th><th>file</th></tr>
{rows or '<tr><td colspan="5">Nothing yet: send one with the curl command.</td></tr>'}</table>
<h2>Webhook events</h2>
<table><tr><th>received</th><th>event</th><th>signature</th></tr>
{events or '<tr><td colspan="3">None yet.</td></tr>'}</table>
</body></html>
"""
