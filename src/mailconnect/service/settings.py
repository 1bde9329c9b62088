"""The service's settings: ``MAILCONNECT_*`` variables, an optional TOML file, then defaults.

:class:`ServiceSettings` extends the core :class:`~mailconnect.config.Config` (data directory,
database URL, secret keys) with what the HTTP service needs. Precedence, highest first: values
given in code (the ``serve`` command's flags), environment variables, the TOML file named by
``MAILCONNECT_CONFIG_FILE`` (or ``serve --config``), the defaults. The file uses the variable
names without the prefix, in lower case (``port = 8025``, ``allow_networks = "10.20.0.0/16"``); an
unknown key in it is an error naming the key. Every setting is listed in docs/operations.md.
"""

from __future__ import annotations

import os
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from mailconnect.config import PREFIX, Config, _as_configuration_error
from mailconnect.errors import ConfigurationError
from mailconnect.netguard import GuardPolicy
from mailconnect.smtp import TlsPolicy

__all__ = ["CONFIG_FILE_VARIABLE", "WEBHOOK_PORTS", "ServiceSettings", "load_settings"]

CONFIG_FILE_VARIABLE = "MAILCONNECT_CONFIG_FILE"
WEBHOOK_PORTS = frozenset({80, 443})
_FILE_VALUES: ContextVar[dict[str, Any]] = ContextVar("mailconnect_file_values", default={})  # noqa: B039 - never mutated
_LOG_LEVELS = ("debug", "info", "warning", "error")


class _FileSource(PydanticBaseSettingsSource):
    """Values read from the TOML file (below the environment, above the defaults)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return _FILE_VALUES.get().get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_FILE_VALUES.get())


class ServiceSettings(Config):
    """Everything ``mailconnect serve`` reads. Build it with :func:`load_settings`."""

    host: str = "127.0.0.1"
    port: int = Field(default=8025, ge=0, le=65535)
    workers: int = Field(default=4, ge=0, le=256)  # concurrent sends in this process; 0 = none
    allow_networks: str = ""  # networks tenants may reach although private (on-premises servers)
    allowed_ports: str = ""  # SMTP ports tenants may use; empty = 25, 465, 587, 2525
    webhook_ports: str = ""  # ports webhook URLs may use besides 80 and 443
    operator_token: SecretStr | None = None
    max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    test_rate_per_minute: int = Field(default=10, ge=1)  # connection tests + discoveries / tenant
    smtp_ca_file: Path | None = None  # trust this CA (PEM) for SMTP instead of the system's
    dns_nameserver: str | None = None  # HOST[:PORT] for discovery and connection tests
    log_level: str = "info"
    webhook_max_attempts: int = Field(default=8, ge=1, le=50)
    webhook_retry_seconds: float = Field(default=10.0, gt=0)  # first retry; doubles each time
    webhook_timeout_seconds: float = Field(default=10.0, gt=0)
    event_poll_seconds: float = Field(default=1.0, gt=0)
    key_cache_seconds: float = Field(default=5.0, ge=0)  # how long a checked API key is trusted

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _FileSource(settings_cls))

    @field_validator("log_level")
    @classmethod
    def _check_log_level(cls, value: str) -> str:
        if value.lower() not in _LOG_LEVELS:
            raise ConfigurationError(
                PREFIX + "LOG_LEVEL",
                f"'{value}' is not a log level",
                "use " + ", ".join(_LOG_LEVELS),
            )
        return value.lower()

    @field_validator("operator_token")
    @classmethod
    def _check_operator_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or value.get_secret_value() == "":
            return None
        text = value.get_secret_value()
        if len(text) < 24 or not text.isascii() or not text.isprintable() or " " in text:
            raise ConfigurationError(
                PREFIX + "OPERATOR_TOKEN",
                "the operator token must be at least 24 printable ASCII characters without spaces",
                'make one with `python -c "import secrets; print(secrets.token_urlsafe(32))"`',
            )
        return value

    @field_validator("dns_nameserver")
    @classmethod
    def _check_nameserver(cls, value: str | None) -> str | None:
        if not value:
            return None
        from mailconnect.discovery import parse_nameserver

        try:
            parse_nameserver(value)
        except ConfigurationError as exc:
            raise ConfigurationError(PREFIX + "DNS_NAMESERVER", exc.problem, exc.fix) from None
        return value

    def guard_policy(self) -> GuardPolicy:
        """The network guard for SMTP hosts that tenants type: always on."""
        return _policy(self.allowed_ports, self.allow_networks, "ALLOWED_PORTS")

    def webhook_policy(self) -> GuardPolicy:
        """The network guard for webhook URLs: ports 80 and 443 plus MAILCONNECT_WEBHOOK_PORTS."""
        extra = _policy(self.webhook_ports, "", "WEBHOOK_PORTS").allowed_ports
        ports = WEBHOOK_PORTS | (extra if self.webhook_ports.strip() else frozenset())
        base = self.guard_policy()
        return GuardPolicy(enabled=True, allowed_ports=ports, allow_networks=base.allow_networks)

    def tls_policy(self) -> TlsPolicy:
        return TlsPolicy(ca_file=self.smtp_ca_file)


def _policy(ports: str, networks: str, ports_variable: str) -> GuardPolicy:
    try:
        return GuardPolicy.parse(allowed_ports=ports or None, allow_networks=networks or None)
    except ConfigurationError as exc:
        variable = PREFIX + (ports_variable if exc.field == "allowed_ports" else "ALLOW_NETWORKS")
        raise ConfigurationError(variable, exc.problem, exc.fix) from None


def _read_file(path: Path) -> dict[str, Any]:
    field = CONFIG_FILE_VARIABLE
    try:
        data = tomllib.loads(path.read_text("utf-8"))
    except OSError as exc:
        raise ConfigurationError(
            field, f"{path} cannot be read ({exc.strerror})", "check the path"
        ) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigurationError(
            field, f"{path} is not valid TOML ({exc})", "fix the file's syntax"
        ) from None
    known = set(ServiceSettings.model_fields)
    for key in data:
        if key not in known:
            raise ConfigurationError(
                f"{path}: {key}",
                "is not a mailconnect setting",
                "use the names from docs/operations.md in lower case without the prefix",
            )
    return data


def load_settings(config_file: Path | None = None, **overrides: Any) -> ServiceSettings:
    """The settings from flags (``overrides``), the environment, the file and the defaults."""
    overrides = {key: value for key, value in overrides.items() if value is not None}
    if config_file is None and os.environ.get(CONFIG_FILE_VARIABLE):
        config_file = Path(os.environ[CONFIG_FILE_VARIABLE])
    token = _FILE_VALUES.set(_read_file(config_file) if config_file is not None else {})
    try:
        settings = ServiceSettings(**overrides)
    except ValidationError as exc:
        raise _as_configuration_error(exc) from None
    finally:
        _FILE_VALUES.reset(token)
    settings.guard_policy()  # a bad network or port list is reported at start, naming the variable
    settings.webhook_policy()
    return settings
