"""Who is calling: tenant API keys (scoped, hashed, revocable) and the operator token.

API keys
    ``mck_<12 hex>_<43 characters>``: the first part (``mck_`` and 12 hex digits) is the key's
    public *prefix*, stored in clear to find the row; the whole key is stored only as its SHA-256
    (see :mod:`mailconnect.store.service_models` for why a fast hash is right for a random key).
    The key is shown once, in the response that creates it. Scopes: ``send`` (enqueue and read
    messages) and ``manage`` (connections, tests, discovery, webhooks, message retry and cancel).
    A revoked key stops working at once in the process that revoked it and within
    ``MAILCONNECT_KEY_CACHE_SECONDS`` (5 s) in the others, which cache checked keys that long.
Operator token
    The operator manages tenants and their keys. The token comes from
    ``MAILCONNECT_OPERATOR_TOKEN`` or, when that is unset, from ``<data dir>/operator.token``,
    created on first start with mode 0600 (``serve`` prints it once, when it creates it).
Both travel as ``Authorization: Bearer <token>`` and are compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import stat
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailconnect.errors import ConfigurationError
from mailconnect.store.ids import new_id
from mailconnect.store.service_models import ApiKey
from mailconnect.store.types import utcnow

__all__ = [
    "SCOPES",
    "KeyCache",
    "NewKey",
    "Principal",
    "hash_key",
    "load_operator_token",
    "make_key",
    "revoke_key",
]

SCOPES = ("manage", "send")
OPERATOR_TOKEN_FILE = "operator.token"  # noqa: S105 - a file name
_KEY = re.compile(r"^(mck_[0-9a-f]{12})_[A-Za-z0-9_-]{43}$")


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller: a tenant's key (with its scopes) or the operator."""

    tenant_id: uuid.UUID | None
    scopes: frozenset[str]
    key_id: uuid.UUID | None = None
    operator: bool = False


@dataclass(frozen=True, slots=True)
class NewKey:
    """A key just made: ``token`` is shown to the caller once and never stored."""

    row: ApiKey
    token: str


def hash_key(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def make_key(session: Session, tenant_id: uuid.UUID, name: str, scopes: list[str]) -> NewKey:
    """A new key for the tenant (the caller commits)."""
    wanted = sorted(set(scopes))
    for scope in wanted:
        if scope not in SCOPES:
            raise ConfigurationError(
                "scopes", f"'{scope}' is not a scope", "use send, manage or both"
            )
    if not wanted:
        raise ConfigurationError("scopes", "no scope was given", "use send, manage or both")
    prefix = f"mck_{secrets.token_hex(6)}"
    token = f"{prefix}_{secrets.token_urlsafe(32)}"
    row = ApiKey(
        id=new_id(),
        tenant_id=tenant_id,
        name=name,
        prefix=prefix,
        secret_hash=hash_key(token),
        scopes=" ".join(wanted),
    )
    session.add(row)
    session.flush()
    return NewKey(row=row, token=token)


def revoke_key(session: Session, tenant_id: uuid.UUID, key_id: uuid.UUID) -> ApiKey | None:
    """Revoke the tenant's key (idempotent); None when the tenant has no such key."""
    row = session.scalar(select(ApiKey).where(ApiKey.tenant_id == tenant_id, ApiKey.id == key_id))
    if row is None:
        return None
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.flush()
    return row


@dataclass(frozen=True, slots=True)
class _Cached:
    secret_hash: str
    principal: Principal
    until: float


class KeyCache:
    """Checks API keys against the database, remembering good ones for ``ttl`` seconds."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._entries: dict[str, _Cached] = {}
        self._lock = threading.Lock()

    def cached(self, token: str) -> tuple[bool, Principal | None]:
        """(True, principal or None) when the cache can answer; (False, None) when not."""
        match = _KEY.match(token)
        if match is None:
            return True, None
        with self._lock:
            cached = self._entries.get(match.group(1))
        if cached is None or cached.until <= time.monotonic():
            return False, None
        if hmac.compare_digest(cached.secret_hash, hash_key(token)):
            return True, cached.principal
        return True, None

    def check(self, session: Session, token: str) -> Principal | None:
        """The key's principal, or None for an unknown, malformed or revoked key."""
        match = _KEY.match(token)
        if match is None:
            return None
        prefix = match.group(1)
        digest = hash_key(token)
        now = time.monotonic()
        with self._lock:
            cached = self._entries.get(prefix)
        if cached is not None and cached.until > now:
            return cached.principal if hmac.compare_digest(cached.secret_hash, digest) else None
        row = session.scalar(select(ApiKey).where(ApiKey.prefix == prefix))
        if row is None or row.revoked_at is not None:
            return None
        if not hmac.compare_digest(row.secret_hash, digest):
            return None
        principal = Principal(tenant_id=row.tenant_id, scopes=row.scope_set, key_id=row.id)
        if self.ttl > 0:
            with self._lock:
                self._entries[prefix] = _Cached(row.secret_hash, principal, now + self.ttl)
        return principal

    def forget(self, prefix: str) -> None:
        with self._lock:
            self._entries.pop(prefix, None)

    def forget_tenant(self, tenant_id: uuid.UUID) -> None:
        with self._lock:
            for prefix in [
                p for p, c in self._entries.items() if c.principal.tenant_id == tenant_id
            ]:
                del self._entries[prefix]


def operator_matches(expected: str, given: str) -> bool:
    return hmac.compare_digest(expected.encode(), given.encode())


def load_operator_token(configured: str | None, data_dir: Path) -> tuple[str, bool]:
    """The operator token and whether it was just created (then it is to be shown once).

    ``configured`` (MAILCONNECT_OPERATOR_TOKEN) wins; else ``<data dir>/operator.token`` is read,
    or created with mode 0600. A file that others can read is refused, like the key file.
    """
    if configured:
        return configured, False
    path = data_dir / OPERATOR_TOKEN_FILE
    if not path.exists():
        token = secrets.token_urlsafe(32)
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process made it first: read theirs
        else:
            with os.fdopen(descriptor, "w", encoding="ascii") as handle:
                handle.write(token + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            return token, True
    info = path.stat()
    if os.name == "posix" and info.st_mode & 0o077:
        raise ConfigurationError(
            str(path),
            "the operator token file can be read by other users "
            f"(mode {stat.S_IMODE(info.st_mode):o})",
            f"run `chmod 600 {path}`",
        )
    token = path.read_text("ascii").strip()
    if len(token) < 24:
        raise ConfigurationError(
            str(path),
            "the operator token file is empty or too short",
            "delete it to make a new one",
        )
    return token, False
