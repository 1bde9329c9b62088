"""Connection secrets in the database: store, load, audit and rotate (encryption in crypto.py).

The plaintext exists only inside :class:`~mailconnect.crypto.Secret`; the column holds a Fernet
token bound to ``(tenant, connection, purpose)``.

Two operator primitives serve a later ``mailconnect keys`` command:

* :func:`audit_secrets` tries to decrypt every stored secret and reports which rows fail (a key
  needed to decrypt them is missing, or a value was copied between rows) and how many secrets
  each configured key opens (an old key may be removed once it opens none).
* :func:`rotate_secrets` re-encrypts every secret not yet under the current key.
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailconnect.crypto import (
    Keyring,
    Secret,
    SecretBinding,
    SecretBindingError,
    SecretError,
)
from mailconnect.store.connections import require_connection
from mailconnect.store.models import ConnectionSecret
from mailconnect.store.states import SecretPurpose

__all__ = [
    "RotationReport",
    "SecretAudit",
    "SecretProblem",
    "audit_secrets",
    "delete_secret",
    "load_secret",
    "rotate_secrets",
    "store_secret",
]


def _binding(
    tenant_id: uuid.UUID, connection_id: uuid.UUID, purpose: SecretPurpose
) -> SecretBinding:
    return SecretBinding(str(tenant_id), str(connection_id), purpose.value)


def _row_binding(row: ConnectionSecret) -> SecretBinding:
    return _binding(row.tenant_id, row.connection_id, row.purpose)


def store_secret(
    session: Session,
    keyring: Keyring,
    tenant_id: uuid.UUID,
    connection_id: uuid.UUID,
    secret: Secret,
    purpose: SecretPurpose = SecretPurpose.PASSWORD,
) -> None:
    """Encrypt ``secret`` for the tenant's connection, replacing any earlier one."""
    require_connection(session, tenant_id, connection_id)
    ciphertext = keyring.encrypt(secret, _binding(tenant_id, connection_id, purpose))
    row = session.get(ConnectionSecret, (tenant_id, connection_id, purpose))
    if row is None:
        row = ConnectionSecret(
            tenant_id=tenant_id, connection_id=connection_id, purpose=purpose, ciphertext=ciphertext
        )
        session.add(row)
    else:
        row.ciphertext = ciphertext
    session.flush()


def load_secret(
    session: Session,
    keyring: Keyring,
    tenant_id: uuid.UUID,
    connection_id: uuid.UUID,
    purpose: SecretPurpose = SecretPurpose.PASSWORD,
) -> Secret | None:
    """The decrypted secret, None when none is stored; SecretError when it cannot be opened."""
    row = session.scalar(
        select(ConnectionSecret).where(
            ConnectionSecret.tenant_id == tenant_id,
            ConnectionSecret.connection_id == connection_id,
            ConnectionSecret.purpose == purpose,
        )
    )
    if row is None:
        return None
    return keyring.decrypt(row.ciphertext, _row_binding(row))


def delete_secret(
    session: Session,
    tenant_id: uuid.UUID,
    connection_id: uuid.UUID,
    purpose: SecretPurpose = SecretPurpose.PASSWORD,
) -> bool:
    """Forget the secret; True when there was one."""
    row = session.scalar(
        select(ConnectionSecret).where(
            ConnectionSecret.tenant_id == tenant_id,
            ConnectionSecret.connection_id == connection_id,
            ConnectionSecret.purpose == purpose,
        )
    )
    if row is None:
        return False
    session.delete(row)
    session.flush()
    return True


@dataclass(frozen=True, slots=True)
class SecretProblem:
    """A stored secret that cannot be used; ``copied`` tells a moved value from a missing key."""

    tenant_id: uuid.UUID
    connection_id: uuid.UUID
    purpose: SecretPurpose
    copied: bool
    message: str


@dataclass(frozen=True, slots=True)
class SecretAudit:
    """The result of trying every stored secret against the configured keys."""

    total: int
    per_key: dict[int, int] = field(default_factory=dict)  # key index (0 = current) -> count
    problems: list[SecretProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _rows(session: Session, tenant_id: uuid.UUID | None) -> list[ConnectionSecret]:
    query = select(ConnectionSecret).order_by(
        ConnectionSecret.tenant_id, ConnectionSecret.connection_id, ConnectionSecret.purpose
    )
    if tenant_id is not None:
        query = query.where(ConnectionSecret.tenant_id == tenant_id)
    return list(session.scalars(query))


def _problem(row: ConnectionSecret, error: SecretError) -> SecretProblem:
    return SecretProblem(
        tenant_id=row.tenant_id,
        connection_id=row.connection_id,
        purpose=row.purpose,
        copied=isinstance(error, SecretBindingError),
        message=str(error),
    )


def audit_secrets(
    session: Session, keyring: Keyring, tenant_id: uuid.UUID | None = None
) -> SecretAudit:
    """Try to decrypt every stored secret (of one tenant, or all: an operator check)."""
    per_key: Counter[int] = Counter()
    problems: list[SecretProblem] = []
    rows = _rows(session, tenant_id)
    for row in rows:
        try:
            keyring.decrypt(row.ciphertext, _row_binding(row))
        except SecretError as error:
            problems.append(_problem(row, error))
            continue
        index = keyring.key_index(row.ciphertext)
        if index is not None:
            per_key[index] += 1
    return SecretAudit(total=len(rows), per_key=dict(per_key), problems=problems)


@dataclass(frozen=True, slots=True)
class RotationReport:
    rotated: int
    already_current: int
    problems: list[SecretProblem]


def rotate_secrets(
    session: Session, keyring: Keyring, tenant_id: uuid.UUID | None = None
) -> RotationReport:
    """Re-encrypt under the current key every secret that an older key opens.

    Secrets that no key opens, or that belong to another row, are left as they are and reported.
    The caller commits.
    """
    rotated = current = 0
    problems: list[SecretProblem] = []
    for row in _rows(session, tenant_id):
        if keyring.key_index(row.ciphertext) == 0:
            try:
                keyring.decrypt(row.ciphertext, _row_binding(row))
            except SecretError as error:
                problems.append(_problem(row, error))
            else:
                current += 1
            continue
        try:
            row.ciphertext = keyring.rotate(row.ciphertext, _row_binding(row))
        except SecretError as error:
            problems.append(_problem(row, error))
        else:
            rotated += 1
    session.flush()
    return RotationReport(rotated=rotated, already_current=current, problems=problems)
