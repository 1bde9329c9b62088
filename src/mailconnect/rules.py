"""Rules: from settings (and the provider they belong to) to findings. Pure: no IO.

Provider-specific knowledge (refused endpoints, the ports each provider offers, login advice) comes
from the catalogue; the provider-independent rules are the functions below, and their texts come
from ``rules.toml``. :func:`lint` is the one entry point.
"""

from __future__ import annotations

import string
import tomllib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources

from pydantic import BaseModel, ConfigDict, ValidationError

from mailconnect.errors import CatalogueError, ConfigurationError
from mailconnect.findings import Finding, Severity
from mailconnect.providers import Advice, Catalogue, Provider, load_catalogue
from mailconnect.settings import AuthMethod, ConnectionSettings, Security, parse_host

__all__ = ["RuleContext", "lint", "rule_codes"]

_LOGIN_NAMES = {
    "oauth2": "OAuth2",
    "app_password": "app password",
    "password": "password",
    "api_key": "API key",
    "smtp_credentials": "SMTP credentials",
}
_SECURITY_TEXT = {
    Security.TLS: "implicit TLS",
    Security.STARTTLS: "STARTTLS",
    Security.NONE: "unencrypted connections",
}
_SUBMISSION_PORTS = {25, 465, 587, 2525}


class _RuleText(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    severity: Severity
    field: str | None = None
    message: str
    remedy: str
    source: str


@cache
def _texts() -> dict[str, _RuleText]:
    raw = resources.files("mailconnect").joinpath("rules.toml").read_text("utf-8")
    try:
        data = tomllib.loads(raw)["rule"]
        return {code: _RuleText.model_validate(entry) for code, entry in data.items()}
    except (tomllib.TOMLDecodeError, KeyError, ValidationError) as exc:
        raise CatalogueError("rules.toml", f"is malformed ({exc})", "fix the entry") from exc


def rule_codes() -> list[str]:
    """Every code a provider-independent rule can produce (the catalogue adds its own)."""
    return sorted(_texts())


@dataclass(frozen=True, slots=True)
class RuleContext:
    """What the rules look at: the settings, the provider they belong to, and DNS facts."""

    settings: ConnectionSettings
    provider: Provider | None
    catalogue: Catalogue
    sender_mx_hosts: tuple[str, ...] = ()

    def finding(self, code: str, **values: object) -> Finding:
        text = _texts()[code]
        fill = _Filler(values).format
        return Finding(
            code=code,
            severity=text.severity,
            message=fill(text.message),
            remedy=fill(text.remedy),
            source=fill(text.source),
            field=text.field,
        )

    def provider_values(self) -> dict[str, str]:
        provider = self.provider
        if provider is None:
            return {}
        preferred = next(login for login in provider.logins if login.preferred)
        return {
            "provider": provider.name,
            "provider_source": provider.docs[0].url,
            "logins": ", ".join(_LOGIN_NAMES[login.kind] for login in provider.logins),
            "preferred": _LOGIN_NAMES[preferred.kind],
        }


class _Filler(string.Formatter):
    """str.format with named values only; an unknown placeholder is left as written."""

    def __init__(self, values: dict[str, object]) -> None:
        self.values = values

    def format(self, format_string: str, /, *args: object, **kwargs: object) -> str:
        return self.vformat(format_string, (), {})

    def get_value(self, key: int | str, args: Sequence[object], kwargs: object) -> object:
        return self.values.get(str(key), "{" + str(key) + "}")


def _advice(advice: Advice, severity: Severity, field: str) -> Finding:
    return Finding(advice.code, severity, advice.message, advice.remedy, advice.source, field)


def lint(
    settings: ConnectionSettings,
    *,
    provider: Provider | str | None = None,
    catalogue: Catalogue | None = None,
    sender_mx_hosts: Sequence[str] = (),
) -> list[Finding]:
    """All findings for these settings, errors first.

    ``provider`` (an id or a Provider) overrides the provider recognised from the host name;
    ``sender_mx_hosts`` are the MX hosts of the sender's domain, when the caller looked them up.
    """
    catalogue = catalogue or load_catalogue()
    if isinstance(provider, str):
        provider = catalogue.get(provider)
    if provider is None:
        provider = catalogue.for_host(settings.host.ascii)
    context = RuleContext(
        settings=settings,
        provider=provider,
        catalogue=catalogue,
        sender_mx_hosts=tuple(h.rstrip(".").lower() for h in sender_mx_hosts),
    )
    findings = [finding for rule in RULES for finding in rule(context)]
    return sorted(findings, key=lambda f: f.severity is not Severity.ERROR)


# --- the rules --------------------------------------------------------------------------------
# Each takes the context and yields findings; they are independent of each other except where a
# more specific finding makes a generic one redundant, which is said where it happens.


def refused_endpoint(ctx: RuleContext) -> Iterator[Finding]:
    """Endpoints that cannot work for a third-party sender (relay services, MX hosts)."""
    refusal = ctx.catalogue.refusal_for(ctx.settings.host.ascii, ctx.settings.port)
    if refusal is not None:
        yield _advice(refusal.advice, Severity.ERROR, "host")


def provider_endpoint(ctx: RuleContext) -> Iterator[Finding]:
    """On a provider's own host, only the port and security it offers work."""
    provider, s = ctx.provider, ctx.settings
    if provider is None or not provider.owns_host(s.host.ascii) or _refused(ctx):
        return
    endpoint = provider.endpoint(s.host.ascii, s.port, s.security)
    if endpoint is not None:
        if endpoint.caution is not None:
            yield _advice(endpoint.caution, Severity.WARNING, "port")
        return
    if not provider.strict_endpoints:
        return
    same_host = [e for e in provider.endpoints if e.host == s.host.ascii]
    if not same_host:
        # A host known only by pattern (a region the catalogue does not list): judge the port
        # and security by what the provider offers anywhere.
        if any((e.port, e.security) == (s.port, s.security) for e in provider.endpoints):
            return
        same_host = provider.endpoints
    offered = ", ".join(
        f"{e.port} {_SECURITY_TEXT[e.security]}" + (" (recommended)" if e.recommended else "")
        for e in same_host
    )
    best = next((e for e in same_host if e.recommended), same_host[0])
    yield ctx.finding(
        "provider.endpoint_unsupported",
        host=s.host.ascii,
        port=s.port,
        security_text=_SECURITY_TEXT[s.security],
        offered=offered,
        recommended=f"{best.host}, port {best.port} with {_SECURITY_TEXT[best.security]}",
        **ctx.provider_values(),
    )


def cleartext(ctx: RuleContext) -> Iterator[Finding]:
    if ctx.settings.security is not Security.NONE:
        return
    if ctx.settings.sends_credentials:
        yield ctx.finding("security.cleartext_credentials")
    else:
        yield ctx.finding("security.unencrypted")


def port_security_mismatch(ctx: RuleContext) -> Iterator[Finding]:
    if _provider_decides_endpoint(ctx):
        return  # provider_endpoint already said exactly what this host offers
    s = ctx.settings
    if s.port == 587 and s.security is Security.TLS:
        yield ctx.finding("port.tls_on_starttls_port", port=s.port)
    elif s.port == 465 and s.security is Security.STARTTLS:
        yield ctx.finding("port.starttls_on_tls_port")


def unusual_port(ctx: RuleContext) -> Iterator[Finding]:
    if _provider_decides_endpoint(ctx):
        return  # provider_endpoint said what this host offers, cautions included
    s = ctx.settings
    if s.port == 25:
        yield ctx.finding("port.25_often_blocked")
    elif s.port == 2525:
        yield ctx.finding("port.2525_rarely_supported")
    elif s.port not in _SUBMISSION_PORTS:
        yield ctx.finding("port.nonstandard", port=s.port)


def provider_login(ctx: RuleContext) -> Iterator[Finding]:
    provider, auth = ctx.provider, ctx.settings.auth
    if provider is None or provider.kind == "self_hosted":
        return
    if auth is AuthMethod.NONE:
        yield ctx.finding("provider.login_required", **ctx.provider_values())
        return
    specific = [a for a in provider.login_advice if a.auth is auth]
    for advice in specific:
        yield _advice(advice.advice, advice.severity, "auth")
    if not specific and not any(login.auth is auth for login in provider.logins):
        yield ctx.finding("provider.auth_unsupported", auth=auth.value, **ctx.provider_values())


def send_as(ctx: RuleContext) -> Iterator[Finding]:
    s = ctx.settings
    login_domain = s.login_domain
    if s.sender is None or login_domain is None or not s.sends_credentials:
        return
    if _ascii_domain(s.sender.domain) != _ascii_domain(login_domain):
        yield ctx.finding("sender.send_as_permission", sender=s.sender.address, username=s.username)


def inbound_mx(ctx: RuleContext) -> Iterator[Finding]:
    s = ctx.settings
    if s.sender is None or s.host.ascii not in ctx.sender_mx_hosts:
        return
    if _refused(ctx):
        return  # the refusal already explains this host, more precisely
    yield ctx.finding("host.is_inbound_mx", host=s.host.ascii, domain=s.sender.domain)


def ip_literal(ctx: RuleContext) -> Iterator[Finding]:
    if ctx.settings.host.is_ip and ctx.settings.security is not Security.NONE:
        yield ctx.finding("host.ip_literal", host=ctx.settings.host.ascii)


def _ascii_domain(domain: str) -> str:
    """A domain in its IDNA ASCII form, so that bücher.de and xn--bcher-kva.de compare equal."""
    try:
        return parse_host(domain, "domain").ascii
    except ConfigurationError:
        return domain.casefold()


def _refused(ctx: RuleContext) -> bool:
    return ctx.catalogue.refusal_for(ctx.settings.host.ascii, ctx.settings.port) is not None


def _provider_decides_endpoint(ctx: RuleContext) -> bool:
    p = ctx.provider
    return p is not None and p.strict_endpoints and p.owns_host(ctx.settings.host.ascii)


RULES: tuple[Callable[[RuleContext], Iterator[Finding]], ...] = (
    refused_endpoint,
    provider_endpoint,
    cleartext,
    port_security_mismatch,
    unusual_port,
    provider_login,
    send_as,
    inbound_mx,
    ip_literal,
)
