"""Everything a test needs, validated before any IO (a ConfigurationError names the field)."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

from mailconnect.errors import ConfigurationError
from mailconnect.findings import Finding, Severity
from mailconnect.netguard import GuardPolicy, Resolver
from mailconnect.probe._timeouts import Timeouts
from mailconnect.providers import load_catalogue
from mailconnect.settings import (
    AuthMethod,
    ConnectionSettings,
    Security,
    find_control,
    parse_address,
    parse_host,
)
from mailconnect.smtp import TlsPolicy

__all__ = ["Plan", "prepare", "settings_summary"]

VERIFICATION_OFF = Finding(
    code="probe.certificate_not_verified",
    severity=Severity.ERROR,
    message=(
        "The server's certificate was not checked (certificate verification was turned off), "
        "so this test cannot show that the connection reaches the real server: anyone on the "
        "network path could have answered in its place."
    ),
    remedy=(
        "Test again with verification on. If the server uses a company certificate authority, "
        "give its certificate with --ca-file; otherwise IT installs a valid certificate."
    ),
    source="RFC 8314, section 4.1; RFC 6125",
    field="tls",
)


@dataclass(frozen=True, slots=True)
class Plan:
    """A validated test: what to connect to, how to log in, which envelope to try."""

    settings: ConnectionSettings
    secret: str | None = field(repr=False)  # the password or access token, for AUTH only
    sender: str | None
    recipient: str | None
    send_test_to: str | None
    policy: GuardPolicy
    tls: TlsPolicy
    timeouts: Timeouts
    resolver: Resolver | None
    ehlo_name: str | None
    provider: str | None

    @property
    def secrets(self) -> tuple[str, ...]:
        return (self.secret,) if self.secret else ()

    @property
    def findings(self) -> tuple[Finding, ...]:
        if not self.tls.verify and self.settings.security is not Security.NONE:
            return (VERIFICATION_OFF,)
        return ()


def _secret(value: str | None, field: str, what: str, flag: str) -> str:
    if not value:
        raise ConfigurationError(field, f"no {what} was given", f"give it with {flag}")
    if find_control(value):
        # Never echo the value: it is a secret.
        raise ConfigurationError(
            field,
            f"the {what} contains a control character (a line break, a tab or similar)",
            f"copy the {what} again without the line break",
        )
    return value


def _login_secret(
    settings: ConnectionSettings, password: str | None, oauth_token: str | None
) -> str | None:
    if settings.auth is AuthMethod.PASSWORD:
        return _secret(password, "password", "password", "--password-env or --password-stdin")
    if settings.auth is AuthMethod.OAUTH2:
        return _secret(oauth_token, "oauth_token", "OAuth2 access token", "--oauth-token-env")
    return None


def _envelope(
    settings: ConnectionSettings, recipient: str | None, send_test_to: str | None
) -> tuple[str | None, str | None, str | None]:
    sender = settings.sender.address if settings.sender else None
    if sender is None and settings.username and "@" in settings.username:
        sender = _login_address(settings.username)
    test_to = parse_address(send_test_to, "send_test_to") if send_test_to else None
    rcpt = parse_address(recipient, "rcpt") if recipient else None
    if test_to and rcpt and rcpt != test_to:
        raise ConfigurationError(
            "rcpt",
            "a recipient and a different test-message recipient were both given",
            "give only --send-test-to: the test message goes to that address",
        )
    if sender is None and (rcpt or test_to):
        raise ConfigurationError(
            "sender", "no sender address was given", "give the From address with --sender"
        )
    return sender, test_to or rcpt or sender, test_to


def prepare(
    settings: ConnectionSettings,
    *,
    password: str | None = None,
    oauth_token: str | None = None,
    recipient: str | None = None,
    send_test_to: str | None = None,
    policy: GuardPolicy | None = None,
    tls: TlsPolicy | None = None,
    timeouts: Timeouts | None = None,
    resolver: Resolver | None = None,
    ehlo_name: str | None = None,
) -> Plan:
    """Validate a test's inputs. Raises ConfigurationError naming the field; does no IO except
    reading the CA file (to report a bad one as a setting)."""
    if settings.security is Security.NONE and settings.sends_credentials:
        raise ConfigurationError(
            "security",
            "a login would cross the network unencrypted",
            "choose security starttls (usually port 587) or tls (usually port 465)",
        )
    secret = _login_secret(settings, password, oauth_token)
    if settings.sends_credentials and not settings.username:
        raise ConfigurationError("username", "no username was given", "give it with --username")
    sender, rcpt, test_to = _envelope(settings, recipient, send_test_to)
    tls = tls or TlsPolicy()
    tls.context()  # a CA file that cannot be read is a setting to fix, before any connection
    if ehlo_name is not None:
        ehlo_name = _ehlo_name(ehlo_name)
    return Plan(
        settings=settings,
        secret=secret,
        sender=sender,
        recipient=rcpt,
        send_test_to=test_to,
        policy=policy if policy is not None else GuardPolicy(),
        tls=tls,
        timeouts=timeouts or Timeouts(),
        resolver=resolver,
        ehlo_name=ehlo_name,
        provider=_provider_id(settings.host.ascii),
    )


def _ehlo_name(value: str) -> str:
    """The name EHLO sends, in ASCII: a host name in its IDNA form, an IP address as an address
    literal (``[192.0.2.1]``, ``[IPv6:2001:db8::1]``, RFC 5321 section 4.1.3)."""
    try:
        host = parse_host(value, "ehlo_name")
    except ConfigurationError as exc:
        raise ConfigurationError(
            "ehlo_name", exc.problem, "give a name like app.example.com, or an IP address"
        ) from exc
    if not host.is_ip:
        return host.ascii
    return f"[IPv6:{host.ascii}]" if ":" in host.ascii else f"[{host.ascii}]"


@functools.lru_cache(maxsize=1024)
def _login_address(username: str) -> str | None:
    """A login that is an e-mail address, normalised: the usual sender. One that is not a valid
    address (admin@corp) leaves the envelope steps out. Cached: validation is not free."""
    try:
        return parse_address(username, "username")
    except ConfigurationError:
        return None


@functools.lru_cache(maxsize=1024)
def _provider_id(host: str) -> str | None:
    """The catalogue's provider for a host (cached: matching walks every provider's patterns)."""
    provider = load_catalogue().for_host(host)
    return provider.id if provider else None


def settings_summary(plan: Plan, address: str | None = None) -> dict[str, str]:
    """The settings as text for the report and the message to IT. Never a secret."""
    settings = plan.settings
    host = settings.host.display
    if host != settings.host.ascii:
        host = f"{host} ({settings.host.ascii})"
    summary = {
        "host": host,
        "port": str(settings.port),
        "security": settings.security.value,
        "login": settings.auth.value,
        "username": settings.username or "(none)",
        "sender": plan.sender or "(none)",
        "recipient": plan.recipient or "(none)",
        "certificate check": _verification(plan.tls),
    }
    if address is not None:
        summary["address"] = address
    return summary


def _verification(tls: TlsPolicy) -> str:
    if not tls.verify:
        return "OFF (--insecure-skip-verify)"
    if tls.ca_file is not None:
        return f"on, against the CA file {Path(tls.ca_file).name}"
    return "on, against the system's trusted authorities"
