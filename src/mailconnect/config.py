"""Settings read from ``MAILCONNECT_*`` environment variables, with embedded defaults.

With no variable set, mailconnect runs embedded: everything lives in one data directory.

``MAILCONNECT_DATA_DIR``
    The data directory; default ``./data``, resolved against the working directory at start-up
    (so ``cd /srv/app && mailconnect serve`` keeps its data in ``/srv/app/data``). It holds the
    SQLite database ``mailconnect.db`` and the key file ``secret.key``; it is created with mode
    0700 when first needed.
``MAILCONNECT_DATABASE_URL``
    Default ``sqlite:///<data dir>/mailconnect.db``. For scale-out, a PostgreSQL URL:
    ``postgresql://user:password@host/db`` (psycopg 3 is used; ``postgresql+psycopg://`` is
    the same). Relative SQLite paths are resolved against the working directory.
``MAILCONNECT_SECRET_KEYS``
    Fernet keys separated by commas, the first encrypts and all decrypt (see
    :mod:`mailconnect.crypto`). Unset: the key file ``<data dir>/secret.key`` is used (created on
    first use).
``MAILCONNECT_RETENTION_DAYS``
    Unset: every message is kept. A whole number of days (1 to 36500): workers purge the
    messages that finished longer ago at their start and then hourly
    (:func:`mailconnect.outbox.purge_finished`).

An empty variable counts as unset. :func:`load_config` turns every invalid value into a
:class:`~mailconnect.errors.ConfigurationError` naming the variable; no error repeats a secret.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from mailconnect.crypto import KEYS_VARIABLE, parse_key_list
from mailconnect.errors import ConfigurationError

__all__ = ["PREFIX", "Config", "load_config"]

PREFIX = "MAILCONNECT_"
DEFAULT_DATA_DIR = Path("data")
DATABASE_FILE = "mailconnect.db"
KEY_FILE = "secret.key"
MAX_RETENTION_DAYS = 36_500  # a hundred years


def _variable(field: str) -> str:
    return PREFIX + field.upper()


class Config(BaseSettings):
    """mailconnect's settings. Build it with :func:`load_config` (or ``Config(field=value)``)."""

    model_config = SettingsConfigDict(
        env_prefix=PREFIX,
        env_ignore_empty=True,
        extra="ignore",
        frozen=True,
        validate_default=True,
        hide_input_in_errors=True,
    )

    data_dir: Path = Field(default=DEFAULT_DATA_DIR)
    database_url: str = Field(default="", repr=False)
    secret_keys: SecretStr | None = None
    retention_days: int | None = None

    @field_validator("data_dir", mode="before")
    @classmethod
    def _check_data_dir(cls, value: Any) -> Path:
        if value == "":  # an empty variable counts as unset
            value = DEFAULT_DATA_DIR
        text = os.fspath(value) if isinstance(value, str | os.PathLike) else None
        if not text or any(ord(ch) < 32 for ch in text):
            raise ConfigurationError(
                _variable("data_dir"),
                "the data directory is not a usable path",
                "set it to a directory path such as /var/lib/mailconnect, or unset it for ./data",
            )
        path = Path(text).expanduser()
        if path.exists() and not path.is_dir():
            raise ConfigurationError(
                _variable("data_dir"),
                f"{path} exists and is not a directory",
                "choose a directory, or remove the file",
            )
        return path.absolute()

    @field_validator("database_url", mode="after")
    @classmethod
    def _check_database_url(cls, value: str, info: ValidationInfo) -> str:
        data_dir = info.data.get("data_dir")
        if not value:
            if data_dir is None:  # data_dir failed; its own error is reported
                return value
            return URL.create("sqlite", database=str(data_dir / DATABASE_FILE)).render_as_string()
        return normalize_database_url(value)

    @field_validator("retention_days", mode="before")
    @classmethod
    def _check_retention_days(cls, value: Any) -> int | None:
        if value is None or value == "":
            return None
        text = str(value).strip()
        if isinstance(value, bool) or not (text.isascii() and text.isdigit()):
            raise ConfigurationError(
                _variable("retention_days"),
                f"the retention is not a whole number of days from 1 to {MAX_RETENTION_DAYS}",
                "set it to a number of days such as 90, or unset it to keep every message",
            )
        if len(text) > 12 or not 1 <= int(text) <= MAX_RETENTION_DAYS:  # (int() of no giant)
            raise ConfigurationError(
                _variable("retention_days"),
                f"the retention must be 1 to {MAX_RETENTION_DAYS} days",
                "set it to a number of days such as 90, or unset it to keep every message",
            )
        return int(text)

    @field_validator("secret_keys", mode="after")
    @classmethod
    def _check_secret_keys(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or value.get_secret_value() == "":  # empty counts as unset
            return None
        parse_key_list(value.get_secret_value(), KEYS_VARIABLE)
        return value

    @property
    def key_file(self) -> Path:
        """Where the key file lives when MAILCONNECT_SECRET_KEYS is not set."""
        return self.data_dir / KEY_FILE

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite:")

    def secret_key_list(self) -> list[bytes] | None:
        """The keys from MAILCONNECT_SECRET_KEYS, first = current; None when it is not set."""
        if self.secret_keys is None:
            return None
        return parse_key_list(self.secret_keys.get_secret_value(), KEYS_VARIABLE)

    def database_url_for_display(self) -> str:
        """The database URL with any password replaced by ``***``."""
        return make_url(self.database_url).render_as_string(hide_password=True)


def normalize_database_url(value: str) -> str:
    """A SQLite or PostgreSQL URL in the form mailconnect connects with.

    ``postgres://`` and ``postgresql://`` become ``postgresql+psycopg://``; a relative SQLite path
    becomes absolute. Other databases and drivers, and in-memory SQLite, are refused.
    """
    field = _variable("database_url")
    try:
        url = make_url(value)
    except (ArgumentError, ValueError):
        raise ConfigurationError(
            field,
            "the value is not a database URL",
            "write it like postgresql://user:password@host:5432/mailconnect, or unset it for "
            "SQLite in the data directory",
        ) from None
    backend, _, driver = url.drivername.partition("+")  # without loading a dialect
    if backend in {"postgresql", "postgres"}:
        if url.drivername not in {"postgresql", "postgres", "postgresql+psycopg"}:
            raise ConfigurationError(
                field,
                f"the PostgreSQL driver '{driver}' is not supported",
                "mailconnect uses psycopg 3: write postgresql://... or postgresql+psycopg://...",
            )
        return url.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    if backend == "sqlite":
        if url.drivername not in {"sqlite", "sqlite+pysqlite"}:
            raise ConfigurationError(
                field,
                f"the SQLite driver '{driver}' is not supported",
                "write sqlite:///path/to/mailconnect.db",
            )
        database = url.database or ""
        if database in {"", ":memory:"} or database.startswith("file:"):
            raise ConfigurationError(
                field,
                "an in-memory or URI-style SQLite database cannot keep the outbox",
                "write sqlite:///path/to/mailconnect.db, or unset it for the data directory",
            )
        absolute = str(Path(database).expanduser().absolute())
        return url.set(drivername="sqlite", database=absolute).render_as_string()
    raise ConfigurationError(
        field,
        f"the database '{backend}' is not supported",
        "use PostgreSQL (postgresql://...) or SQLite (sqlite:///path/to/mailconnect.db)",
    )


def load_config(**overrides: Any) -> Config:
    """The settings from the environment (``overrides`` win), or a ConfigurationError."""
    try:
        return Config(**overrides)
    except ValidationError as exc:
        raise _as_configuration_error(exc) from None


def _as_configuration_error(exc: ValidationError) -> ConfigurationError:
    first = exc.errors(include_input=False)[0]
    original = (first.get("ctx") or {}).get("error")
    if isinstance(original, ConfigurationError):
        return original
    location = first["loc"][0] if first["loc"] else "setting"
    return ConfigurationError(
        _variable(str(location)),
        first["msg"],
        "correct the value or unset the variable to use the default",
    )
