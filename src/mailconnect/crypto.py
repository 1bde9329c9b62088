"""Encryption at rest for connection secrets (passwords now, OAuth tokens later).

Keys
    A :class:`Keyring` holds one or more Fernet keys; the first is the *current* key, which
    encrypts, and every key can decrypt (``MultiFernet``). The keys come from
    ``MAILCONNECT_SECRET_KEYS`` (comma-separated, first = current) or, when that is not set, from
    the key file ``<data dir>/secret.key`` (one key per line, first = current), which is created
    on first use with mode 0600 and refused when group or others may read it.

Binding
    Fernet has no associated data, so each plaintext is wrapped in a small JSON envelope naming
    the tenant, the connection and the purpose (``password``, later ``oauth_refresh_token``), and
    the envelope is encrypted. Decryption checks all three against the row being read, so a
    ciphertext copied to another row, or from a password column to a token column, is refused.

    Why an envelope rather than per-row keys derived with HKDF: Fernet already authenticates the
    whole envelope (HMAC-SHA256), so the ids inside cannot be changed without the key; the
    envelope keeps ``MultiFernet.rotate`` usable as is (it re-encrypts any token under the current
    key without knowing the row); and a refused value can be explained precisely: "no configured
    key opens it" (a key is missing, or it was altered) is told apart from "it belongs to another
    row" (it was copied). With derived keys every failure looks the same.

Secrets never appear in ``repr()``, logs or exception messages: they travel as :class:`Secret`,
whose repr and str are redacted, and no error here includes a plaintext, a key or a ciphertext.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from mailconnect.errors import (
    ConfigurationError,
    SecretBindingError,
    SecretError,
    SecretUndecryptable,
)

if TYPE_CHECKING:
    from mailconnect.config import Config

__all__ = [
    "KEYS_VARIABLE",
    "Keyring",
    "Secret",
    "SecretBinding",
    "SecretBindingError",
    "SecretError",
    "SecretUndecryptable",
    "create_key_file",
    "generate_key",
    "load_key_file",
    "load_keyring",
    "parse_key_list",
]

KEYS_VARIABLE = "MAILCONNECT_SECRET_KEYS"
_ENVELOPE_VERSION = 1
# A Fernet key is 32 bytes in url-safe base64 with padding: exactly 43 characters and one "=".
_KEY_PATTERN = re.compile(r"^[A-Za-z0-9_-]{43}=$")
_SEPARATORS = re.compile(r"[,\s]+")


class Secret:
    """A secret string whose repr and str are redacted; ``reveal()`` gives the value.

    Equality is constant-time. A Secret is not hashable and cannot be pickled, so it does not end
    up in a cache key or a pickled task by accident.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("Secret holds a str")
        self._value = value

    def reveal(self) -> str:
        """The plaintext. Call it only where the value goes onto the wire or into encryption."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Secret cannot be pickled")

    def __len__(self) -> int:
        return len(self._value)


@dataclass(frozen=True, slots=True)
class SecretBinding:
    """The row a ciphertext belongs to: tenant, connection and what the secret is for."""

    tenant_id: str
    connection_id: str
    purpose: str

    def describe(self) -> str:
        return f"the {self.purpose} of connection {self.connection_id} (tenant {self.tenant_id})"


def generate_key() -> bytes:
    """A new random Fernet key (url-safe base64, 44 bytes)."""
    return Fernet.generate_key()


def parse_key_list(text: str, field: str = KEYS_VARIABLE) -> list[bytes]:
    """Fernet keys separated by commas or whitespace, first = current; duplicates are dropped.

    Errors name ``field`` and the position of the bad item, never the item itself.
    """
    items = [item for item in _SEPARATORS.split(text) if item]
    if not items:
        raise ConfigurationError(
            field,
            "no key is given",
            "set it to one or more Fernet keys separated by commas; make one with "
            '`python -c "from cryptography.fernet import Fernet; '
            'print(Fernet.generate_key().decode())"`',
        )
    keys: list[bytes] = []
    for position, item in enumerate(items, start=1):
        if not _KEY_PATTERN.match(item):
            raise ConfigurationError(
                field,
                f"key {position} of {len(items)} is not a Fernet key "
                "(44 characters of url-safe base64 ending in '=')",
                "copy the key again in full; keys are separated by commas",
            )
        key = item.encode("ascii")
        if key not in keys:
            keys.append(key)
    return keys


class Keyring:
    """Fernet keys, the first of which encrypts; all of them decrypt."""

    __slots__ = ("_fernets", "_ids", "_multi")

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ValueError("a Keyring needs at least one key")
        self._fernets = [Fernet(key) for key in keys]
        self._ids = [_fingerprint(key) for key in keys]
        self._multi = MultiFernet(self._fernets)

    def __repr__(self) -> str:
        return f"Keyring({len(self._fernets)} keys)"

    def __len__(self) -> int:
        return len(self._fernets)

    def encrypt(self, secret: Secret, binding: SecretBinding) -> str:
        """The ciphertext (ASCII) of ``secret`` bound to ``binding``, under the current key."""
        envelope = {
            "v": _ENVELOPE_VERSION,
            "t": binding.tenant_id,
            "c": binding.connection_id,
            "p": binding.purpose,
            "s": secret.reveal(),
        }
        payload = json.dumps(envelope, separators=(",", ":"), ensure_ascii=False).encode()
        return self._multi.encrypt(payload).decode("ascii")

    def decrypt(self, token: str, binding: SecretBinding) -> Secret:
        """The plaintext of ``token``, which must have been encrypted for ``binding``.

        Raises :class:`SecretUndecryptable` when no key opens it and :class:`SecretBindingError`
        when it belongs to another row.
        """
        try:
            payload = self._multi.decrypt(token.encode("ascii"))
        except (InvalidToken, UnicodeEncodeError):
            raise SecretUndecryptable(
                f"no configured key can decrypt {binding.describe()}: the key that encrypted it "
                f"is missing from {KEYS_VARIABLE} or the key file, or the stored value was "
                "altered. Add the old key back (after the current one), or enter the secret again"
            ) from None
        try:
            envelope = json.loads(payload)
            found = (envelope["t"], envelope["c"], envelope["p"])
            value = envelope["s"]
            valid = envelope["v"] == _ENVELOPE_VERSION and isinstance(value, str)
        except (ValueError, KeyError, TypeError):
            valid = False
        if not valid:
            raise SecretUndecryptable(
                f"{binding.describe()} decrypts but is not in mailconnect's format; "
                "enter the secret again"
            )
        if found != (binding.tenant_id, binding.connection_id, binding.purpose):
            raise SecretBindingError(
                f"the value stored as {binding.describe()} was encrypted for another row "
                "(it may have been copied); enter the secret again"
            )
        return Secret(value)

    def rotate(self, token: str, binding: SecretBinding) -> str:
        """``token`` re-encrypted under the current key, after checking that it belongs here."""
        self.decrypt(token, binding)
        return self._multi.rotate(token.encode("ascii")).decode("ascii")

    def key_index(self, token: str) -> int | None:
        """Which key (0 = current) opens ``token``, or None when none does."""
        data = token.encode("ascii", errors="replace")
        for index, fernet in enumerate(self._fernets):
            with contextlib.suppress(InvalidToken):
                fernet.decrypt(data)
                return index
        return None

    def fingerprints(self) -> list[str]:
        """Short, non-secret ids of the keys in order (for `keys list` and reports)."""
        return list(self._ids)


def _fingerprint(key: bytes) -> str:
    # A MAC of a fixed label under the key: identifies the key and reveals nothing about it.
    return hmac.new(key, b"mailconnect key id", hashlib.sha256).hexdigest()[:12]


def load_key_file(path: Path) -> list[bytes]:
    """The keys in an existing key file, after checking that only its owner can read it."""
    try:
        info = path.stat()
    except OSError as exc:
        raise ConfigurationError(
            str(path), f"the key file cannot be read ({exc.strerror})", _KEY_FILE_FIX
        ) from None
    if not stat.S_ISREG(info.st_mode):
        raise ConfigurationError(str(path), "the key file is not a regular file", _KEY_FILE_FIX)
    if os.name == "posix" and info.st_mode & 0o077:
        raise ConfigurationError(
            str(path),
            f"the key file can be read or changed by other users (mode {info.st_mode & 0o777:o})",
            f"run `chmod 600 {path}` so that only its owner can use it",
        )
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError):
        raise ConfigurationError(
            str(path), "the key file cannot be read as text", _KEY_FILE_FIX
        ) from None
    return parse_key_list(text, field=str(path))


_KEY_FILE_FIX = (
    "restore the key file from a backup, or set MAILCONNECT_SECRET_KEYS; "
    "without its key, stored passwords must be entered again"
)


def create_key_file(path: Path) -> list[bytes] | None:
    """Create ``path`` with one new key, mode 0600; None when another process created it first.

    The key is written to a private temporary file, flushed to disk, then published with
    ``link()``, which fails if ``path`` exists: readers never see a half-written key file.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = generate_key()
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            os.fchmod(handle.fileno(), 0o600)
            handle.write(key + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            return None
    finally:
        temporary.unlink(missing_ok=True)
    _fsync_directory(path.parent)
    return [key]


def _fsync_directory(directory: Path) -> None:
    if os.name != "posix":
        return
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def load_keyring(config: Config) -> Keyring:
    """The keyring for ``config``: MAILCONNECT_SECRET_KEYS if set, else the data dir's key file.

    The key file is created on first use. When the keys come from the environment the key file
    is neither read nor created; to move from the file to the variable, put the file's key into
    the variable.
    """
    keys = config.secret_key_list()
    if keys is not None:
        return Keyring(keys)
    return Keyring(_file_keys(config.key_file))


def _file_keys(path: Path) -> list[bytes]:
    if not path.exists():
        created = create_key_file(path)
        if created is not None:
            return created
    return load_key_file(path)
