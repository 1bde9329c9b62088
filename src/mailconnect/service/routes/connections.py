"""Connections: a tenant's outgoing mail servers, their write-only passwords, and the test.

Saving runs the rules: an error finding refuses the save (422, ``settings-refused``, with the
findings), warnings come back in ``warnings``. The connection test runs the probe with the stored
password, through the network guard, and records the result as the connection's status (a pass
also releases the messages held for it).
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Body, Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from mailconnect.crypto import Secret
from mailconnect.errors import ConfigurationError
from mailconnect.findings import Finding, blocking
from mailconnect.outbox import release_held
from mailconnect.probe import Report, Timeouts, probe
from mailconnect.providers import load_catalogue
from mailconnect.rules import lint
from mailconnect.service.deps import Manage, RuntimeDep, rate_limited, tenant_of
from mailconnect.service.problems import Problem
from mailconnect.service.runtime import Runtime
from mailconnect.service.schemas import (
    ConnectionCreate,
    ConnectionList,
    ConnectionOut,
    ConnectionUpdate,
    FindingOut,
    LimitsIn,
    LimitsOut,
    SenderOut,
    TestRequest,
    TestResult,
)
from mailconnect.settings import AuthMethod, ConnectionSettings
from mailconnect.store import (
    Connection,
    ConnectionSecret,
    ConnectionStatus,
    Limits,
    SecretPurpose,
    create_connection,
    delete_connection,
    delete_secret,
    get_connection,
    list_connections,
    load_secret,
    set_connection_status,
    store_secret,
    update_connection,
)

__all__ = ["connection_out", "router"]

router = APIRouter(prefix="/v1/connections", tags=["connections"])
# The probe names its inputs after the CLI's flags; the API's fields are these.
_PROBE_FIELDS = {"rcpt": "recipient", "send_test_to": "send_test_to"}


def connection_out(
    connection: Connection, password_stored: bool, warnings: list[Finding] | None = None
) -> ConnectionOut:
    sender = None
    if connection.sender_address:
        sender = SenderOut(
            address=connection.sender_address,
            display_name=connection.sender_name,
            reply_to=connection.reply_to,
        )
    return ConnectionOut(
        id=connection.id,
        name=connection.name,
        provider=connection.provider_id,
        host=connection.host,
        port=connection.port,
        security=connection.security.value,
        auth=connection.auth.value,
        username=connection.username,
        sender=sender,
        limits=LimitsOut(
            per_minute=connection.max_messages_per_minute,
            per_day=connection.max_messages_per_day,
            concurrent_sessions=connection.max_concurrent_sessions,
        ),
        password_stored=password_stored,
        status=connection.status.value,
        status_reason=connection.status_reason,
        status_changed_at=connection.status_changed_at,
        created_at=connection.created_at,
        updated_at=connection.updated_at,
        warnings=[FindingOut.model_validate(f.as_dict()) for f in warnings or []],
    )


def _stored_passwords(session: Session, tenant_id: uuid.UUID) -> set[uuid.UUID]:
    return set(
        session.scalars(
            select(ConnectionSecret.connection_id).where(
                ConnectionSecret.tenant_id == tenant_id,
                ConnectionSecret.purpose == SecretPurpose.PASSWORD,
            )
        )
    )


def _has_password(session: Session, tenant_id: uuid.UUID, connection_id: uuid.UUID) -> bool:
    count = session.scalar(
        select(func.count())
        .select_from(ConnectionSecret)
        .where(
            ConnectionSecret.tenant_id == tenant_id,
            ConnectionSecret.connection_id == connection_id,
            ConnectionSecret.purpose == SecretPurpose.PASSWORD,
        )
    )
    return bool(count)


def _require(session: Session, tenant_id: uuid.UUID, connection_id: uuid.UUID) -> Connection:
    connection = get_connection(session, tenant_id, connection_id)
    if connection is None:
        raise Problem.not_found("connection")
    return connection


def _limits(body: LimitsIn | None) -> Limits | None:
    if body is None:
        return None
    return Limits(body.per_minute, body.per_day, body.concurrent_sessions)


def _check(settings: ConnectionSettings, provider: str | None) -> tuple[list[Finding], str | None]:
    """The rules' findings (422 when one is an error) and the provider id."""
    catalogue = load_catalogue()
    matched = catalogue.get(provider) if provider else catalogue.for_host(settings.host.ascii)
    findings = lint(settings, provider=matched, catalogue=catalogue)
    if blocking(findings):
        errors = [f for f in findings if f.severity.value == "error"]
        raise Problem(
            "settings-refused",
            "; ".join(f.message for f in errors),
            errors=[
                {"field": f.field or "host", "problem": f.message, "fix": f.remedy, "code": f.code}
                for f in errors
            ],
            findings=[f.as_dict() for f in findings],
        )
    return findings, matched.id if matched else None


def _check_password(auth: AuthMethod, password: str | None, stored: bool) -> None:
    if auth is AuthMethod.PASSWORD and not password and not stored:
        raise ConfigurationError(
            "password", "password login needs a password", "add the password (write-only)"
        )
    if auth is AuthMethod.NONE and password:
        raise ConfigurationError(
            "password",
            "a password was given for a connection without login",
            "set auth to password, or leave the password out",
        )


@router.post("", status_code=201, response_model=ConnectionOut)
def create(body: ConnectionCreate, runtime: RuntimeDep, principal: Manage) -> ConnectionOut:
    """Add a connection. Refused (422) when the rules find an error; warnings are returned."""
    tenant_id = tenant_of(principal)
    sender = body.sender
    settings = ConnectionSettings.parse(
        host=body.host,
        port=body.port,
        security=body.security,
        auth=body.auth,
        username=body.username,
        sender=sender.address if sender else None,
        display_name=sender.display_name if sender else None,
        reply_to=sender.reply_to if sender else None,
    )
    _check_password(settings.auth, body.password, stored=False)
    findings, provider = _check(settings, body.provider)
    with runtime.sessions.begin() as session:
        connection = create_connection(
            session,
            tenant_id,
            name=body.name,
            settings=settings,
            provider_id=provider,
            limits=_limits(body.limits),
        )
        if body.password:
            store_secret(session, runtime.keyring, tenant_id, connection.id, Secret(body.password))
        return connection_out(connection, bool(body.password), findings)


@router.get("", response_model=ConnectionList)
def list_all(runtime: RuntimeDep, principal: Manage) -> ConnectionList:
    tenant_id = tenant_of(principal)
    with runtime.reader() as session:
        stored = _stored_passwords(session, tenant_id)
        rows = list_connections(session, tenant_id)
        return ConnectionList(data=[connection_out(c, c.id in stored) for c in rows])


@router.get("/{connection_id}", response_model=ConnectionOut)
def read(connection_id: uuid.UUID, runtime: RuntimeDep, principal: Manage) -> ConnectionOut:
    tenant_id = tenant_of(principal)
    with runtime.reader() as session:
        connection = _require(session, tenant_id, connection_id)
        return connection_out(connection, _has_password(session, tenant_id, connection_id))


def _merged(connection: Connection, body: ConnectionUpdate) -> ConnectionSettings:
    current = connection.settings
    given = body.model_fields_set
    sender = current.sender
    if "sender" in given:
        new_sender = body.sender
        address = new_sender.address if new_sender else None
        display_name = new_sender.display_name if new_sender else None
        reply_to = new_sender.reply_to if new_sender else None
    else:
        address = sender.address if sender else None
        display_name = sender.display_name if sender else None
        reply_to = sender.reply_to if sender else None
    auth = body.auth if "auth" in given and body.auth is not None else current.auth.value
    username = body.username if "username" in given else current.username
    return ConnectionSettings.parse(
        host=body.host if body.host is not None else current.host.ascii,
        port=body.port if body.port is not None else current.port,
        security=body.security if body.security is not None else current.security.value,
        auth=auth,
        username=username if auth != "none" else None,
        sender=address,
        display_name=display_name,
        reply_to=reply_to,
    )


@router.patch("/{connection_id}", response_model=ConnectionOut)
def update(
    connection_id: uuid.UUID, body: ConnectionUpdate, runtime: RuntimeDep, principal: Manage
) -> ConnectionOut:
    """Change what is given (a new password replaces the stored one). Changed server settings
    make the connection untested again; the rules run on the result."""
    tenant_id = tenant_of(principal)
    with runtime.sessions.begin() as session:
        connection = _require(session, tenant_id, connection_id)
        settings = _merged(connection, body)
        stored = _has_password(session, tenant_id, connection_id)
        _check_password(settings.auth, body.password, stored=stored)
        findings, provider = _check(settings, body.provider or connection.provider_id)
        updated = update_connection(
            session,
            tenant_id,
            connection_id,
            name=body.name,
            settings=settings,
            limits=_limits(body.limits),
        )
        updated.provider_id = provider
        if settings.auth is AuthMethod.NONE and stored:
            delete_secret(session, tenant_id, connection_id)
            stored = False
        if body.password:
            store_secret(session, runtime.keyring, tenant_id, connection_id, Secret(body.password))
            stored = True
        session.flush()
        return connection_out(updated, stored, findings)


@router.delete("/{connection_id}", status_code=204, response_class=Response)
def delete(connection_id: uuid.UUID, runtime: RuntimeDep, principal: Manage) -> Response:
    """Delete a connection and its password; refused (409) while messages refer to it."""
    tenant_id = tenant_of(principal)
    with runtime.sessions.begin() as session:
        _require(session, tenant_id, connection_id)
        try:
            delete_connection(session, tenant_id, connection_id)
        except ConfigurationError as exc:
            raise Problem(
                "conflict",
                exc.problem,
                errors=[{"field": "connection_id", "problem": exc.problem, "fix": exc.fix}],
            ) from None
    return Response(status_code=204)


def _load_for_test(
    runtime: Runtime, tenant_id: uuid.UUID, connection_id: uuid.UUID
) -> tuple[ConnectionSettings, Secret | None, str | None]:
    with runtime.reader() as session:
        connection = _require(session, tenant_id, connection_id)
        settings = connection.settings
        secret = None
        if settings.auth is AuthMethod.PASSWORD:
            secret = load_secret(session, runtime.keyring, tenant_id, connection_id)
        return settings, secret, connection.provider_id


def _record(
    runtime: Runtime, tenant_id: uuid.UUID, connection_id: uuid.UUID, report: Report
) -> tuple[ConnectionOut, int]:
    with runtime.sessions.begin() as session:
        _require(session, tenant_id, connection_id)
        diagnosis = report.diagnosis
        if report.passed:
            connection = set_connection_status(
                session, tenant_id, connection_id, ConnectionStatus.OK
            )
        elif diagnosis is not None and not diagnosis.retryable:
            connection = set_connection_status(
                session,
                tenant_id,
                connection_id,
                ConnectionStatus.NEEDS_ATTENTION,
                reason=f"{diagnosis.title}: {diagnosis.explanation}",
            )
        else:
            connection = _require(session, tenant_id, connection_id)
        out = connection_out(connection, _has_password(session, tenant_id, connection_id))
    released = release_held(runtime.outbox, tenant_id, connection_id) if report.passed else 0
    return out, released


@router.post("/{connection_id}/test", response_model=TestResult)
async def run_test(
    connection_id: uuid.UUID,
    runtime: RuntimeDep,
    principal: Manage,
    body: Annotated[TestRequest | None, Body()] = None,
) -> TestResult:
    """Run the connection test with the stored password and return its report (rate-limited).

    A pass sets the status to ok and releases held messages; a failure that retrying cannot fix
    sets needs_attention with the diagnosis.
    """
    tenant_id = tenant_of(principal)
    await rate_limited(runtime, principal)
    settings, secret, _provider = await run_in_threadpool(
        _load_for_test, runtime, tenant_id, connection_id
    )
    if settings.auth is AuthMethod.PASSWORD and secret is None:
        raise Problem.invalid(
            "password",
            "no password is stored for this connection",
            "PATCH the connection with its password",
        )
    request = body or TestRequest()
    try:
        report = await probe(
            settings,
            password=secret.reveal() if secret is not None else None,
            recipient=request.recipient,
            send_test_to=request.send_test_to,
            policy=runtime.guard,
            tls=runtime.tls,
            timeouts=Timeouts.per_step(10.0),
            resolver=runtime.resolver,
        )
    except ConfigurationError as exc:
        field = _PROBE_FIELDS.get(exc.field, exc.field)
        raise ConfigurationError(field, exc.problem, exc.fix) from None
    if report.operator_note:
        runtime.log.info(
            "connection test note",
            extra={"connection_id": str(connection_id), "note": report.operator_note},
        )
    out, released = await run_in_threadpool(_record, runtime, tenant_id, connection_id, report)
    data: dict[str, Any] = report.as_dict()
    return TestResult(passed=report.passed, report=data, connection=out, released=released)
