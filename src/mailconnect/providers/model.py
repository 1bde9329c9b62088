"""The shape of the provider catalogue, checked when the data file is loaded.

The catalogue is data (``catalogue.toml``); this module only says what a valid entry looks like and
answers questions about it: which provider a host, an MX or a domain belongs to.
"""

from __future__ import annotations

import functools
import re
from functools import cached_property
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mailconnect.errors import ConfigurationError
from mailconnect.findings import Severity
from mailconnect.settings import AuthMethod, Security, parse_host

__all__ = [
    "Advice",
    "Catalogue",
    "DocLink",
    "Endpoint",
    "Limits",
    "Login",
    "LoginAdvice",
    "Provider",
    "Refusal",
    "host_matches",
]

_PATTERN = re.compile(r"^[a-z0-9*][a-z0-9.*-]*$")
_CODE = r"^[a-z0-9_]+(\.[a-z0-9_]+)*$"
_ID = r"^[a-z0-9][a-z0-9-]*$"
Code = Annotated[str, Field(pattern=_CODE)]
Text = Annotated[str, Field(min_length=3)]
Url = Annotated[str, Field(pattern=r"^https://[^\s]+$")]
Count = Annotated[int, Field(ge=1)]
LoginKind = Literal["oauth2", "app_password", "password", "api_key", "smtp_credentials"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DocLink(_Strict):
    title: Text
    url: Url


class Advice(_Strict):
    """The text of a finding: what is wrong or worth knowing, what to do, and where it is said."""

    code: Code
    message: Text
    remedy: Text
    source: Text


class Endpoint(_Strict):
    """A submission endpoint that works for a third-party sender."""

    host: str
    port: Annotated[int, Field(ge=1, le=65535)]
    security: Security
    recommended: bool = False
    region: str | None = None
    caution: Advice | None = None  # shown as a warning when this endpoint is chosen

    @field_validator("host")
    @classmethod
    def _valid_host(cls, value: str) -> str:
        return _checked_host(value)


class Login(_Strict):
    """A way to log in, and the form the username takes for it."""

    kind: LoginKind
    username: Text
    preferred: bool = False
    note: str | None = None

    @property
    def auth(self) -> AuthMethod:
        return AuthMethod.OAUTH2 if self.kind == "oauth2" else AuthMethod.PASSWORD


class LoginAdvice(_Strict):
    """A finding raised when the settings use ``auth`` with this provider."""

    auth: AuthMethod
    severity: Severity = Severity.WARNING
    advice: Advice


class Limits(_Strict):
    """Sending limits of one mailbox or account; None where the provider publishes none."""

    messages_per_minute: Count | None = None
    messages_per_day: Count | None = None
    recipients_per_day: Count | None = None
    recipients_per_message: Count | None = None
    concurrent_connections: Count | None = None
    note: str | None = None
    source: Text


class Refusal(_Strict):
    """Endpoints that cannot work for a third-party sender, with the reason."""

    hosts: Annotated[list[str], Field(min_length=1)]
    ports: list[int] | None = None  # None: any port on these hosts
    advice: Advice

    @field_validator("hosts")
    @classmethod
    def _valid_patterns(cls, value: list[str]) -> list[str]:
        return [_checked_pattern(p) for p in value]


class Provider(_Strict):
    id: Annotated[str, Field(pattern=_ID)]
    name: Text
    aliases: list[str] = []
    kind: Literal["mailbox", "transactional", "self_hosted"]
    domains: list[str] = []  # sender domains the provider hosts itself (gmail.com)
    mx_patterns: list[str] = []  # MX host names that mean a domain's mail is at this provider
    host_patterns: list[str] = []  # more submission host names that identify the provider
    endpoints: list[Endpoint] = []
    strict_endpoints: bool = True  # on the provider's hosts, only the listed port+security work
    logins: Annotated[list[Login], Field(min_length=1)]
    login_advice: list[LoginAdvice] = []
    requirements: Annotated[list[Text], Field(min_length=1)]
    limits: Limits
    docs: Annotated[list[DocLink], Field(min_length=1)]
    refused: list[Refusal] = []
    regions: list[str] = []

    @field_validator("mx_patterns", "host_patterns")
    @classmethod
    def _valid_patterns(cls, value: list[str]) -> list[str]:
        return [_checked_pattern(p) for p in value]

    @field_validator("domains")
    @classmethod
    def _valid_domains(cls, value: list[str]) -> list[str]:
        return [_checked_host(d) for d in value]

    @model_validator(mode="after")
    def _consistent(self) -> Provider:
        recommended = [(e.region, e.host) for e in self.endpoints if e.recommended]
        if self.endpoints and not recommended:
            raise ValueError("endpoints: mark one endpoint as recommended")
        regions = [r for r, _ in recommended]
        if len(regions) != len(set(regions)):
            raise ValueError("endpoints: more than one recommended endpoint in one region")
        unknown = {e.region for e in self.endpoints if e.region} - set(self.regions)
        if unknown:
            raise ValueError(f"endpoints: region(s) {sorted(unknown)} missing from regions")
        if sum(login.preferred for login in self.logins) != 1:
            raise ValueError("logins: mark exactly one login as preferred")
        return self

    @property
    def recommended(self) -> list[Endpoint]:
        return [e for e in self.endpoints if e.recommended]

    def owns_host(self, host: str) -> bool:
        """True when ``host`` is one of this provider's submission hosts."""
        return any(e.host == host for e in self.endpoints) or any(
            host_matches(p, host) for p in self.host_patterns
        )

    def endpoint(self, host: str, port: int, security: Security) -> Endpoint | None:
        for e in self.endpoints:
            if (e.host, e.port, e.security) == (host, port, security):
                return e
        return None

    def refusal_for(self, host: str, port: int) -> Refusal | None:
        for refusal in self.refused:
            if refusal.ports is not None and port not in refusal.ports:
                continue
            if any(host_matches(p, host) for p in refusal.hosts):
                return refusal
        return None

    def matches_mx(self, mx_host: str) -> bool:
        return any(host_matches(p, mx_host) for p in self.mx_patterns)


class Catalogue(_Strict):
    providers: list[Provider]

    @model_validator(mode="after")
    def _unique(self) -> Catalogue:
        ids = [p.id for p in self.providers]
        dupes = {i for i in ids if ids.count(i) > 1}
        if dupes:
            raise ValueError(f"duplicate provider ids: {sorted(dupes)}")
        # One code, one meaning: a code may repeat (the same caution on several endpoints)
        # only with exactly the same advice.
        seen: dict[str, tuple[str, Advice]] = {}
        for p in self.providers:
            for advice in (
                [r.advice for r in p.refused]
                + [la.advice for la in p.login_advice]
                + [e.caution for e in p.endpoints if e.caution]
            ):
                first = seen.setdefault(advice.code, (p.id, advice))
                if first[1] != advice:
                    raise ValueError(
                        f"finding code {advice.code} is used by '{first[0]}' and '{p.id}' "
                        "with different texts"
                    )
        return self

    @cached_property
    def _by_id(self) -> dict[str, Provider]:
        return {p.id: p for p in self.providers}

    @property
    def ids(self) -> list[str]:
        return [p.id for p in self.providers]

    def get(self, provider_id: str, field: str = "provider") -> Provider:
        """The provider with this id; a configuration error listing the ids otherwise."""
        try:
            return self._by_id[provider_id.strip().lower()]
        except KeyError:
            raise ConfigurationError(
                field,
                f"there is no provider '{provider_id}'",
                "choose one of: " + ", ".join(self.ids),
            ) from None

    def for_host(self, host: str) -> Provider | None:
        """The provider a submission (or refused) host belongs to."""
        for provider in self.providers:
            if provider.owns_host(host):
                return provider
        for provider in self.providers:
            if any(host_matches(p, host) for r in provider.refused for p in r.hosts):
                return provider
            if provider.matches_mx(host):
                return provider
        return None

    def refusal_for(self, host: str, port: int) -> Refusal | None:
        """The refusal of ``host:port``: the owning provider's first (see :meth:`for_host`),
        then any provider's, in catalogue order. Lint and discovery both ask here, so they
        name the same finding code for a host."""
        owner = self.for_host(host)
        if owner is not None and (refusal := owner.refusal_for(host, port)) is not None:
            return refusal
        for provider in self.providers:
            refusal = provider.refusal_for(host, port)
            if refusal is not None:
                return refusal
        return None

    def for_mx(self, mx_hosts: list[str]) -> Provider | None:
        """The provider whose inbound servers a domain's MX records name."""
        for mx in mx_hosts:
            name = mx.rstrip(".").lower()
            for provider in self.providers:
                if provider.matches_mx(name):
                    return provider
        return None

    def for_domain(self, domain: str) -> Provider | None:
        """The provider that hosts a consumer domain such as gmail.com."""
        domain = domain.rstrip(".").lower()
        for provider in self.providers:
            if domain in provider.domains:
                return provider
        return None


def host_matches(pattern: str, host: str) -> bool:
    """Glob match on host names: ``*`` stands for one or more characters of a name."""
    return _compiled(pattern).match(host.rstrip(".").lower()) is not None


@functools.lru_cache(maxsize=1024)
def _compiled(pattern: str) -> re.Pattern[str]:
    # The catalogue's patterns are few and fixed; every enqueue asks about its host.
    return re.compile("^" + re.escape(pattern).replace(r"\*", r"[a-z0-9.-]+") + "$")


def _checked_pattern(pattern: str) -> str:
    if not _PATTERN.match(pattern):
        raise ValueError(f"'{pattern}' is not a lower-case host pattern (letters, digits, . - *)")
    return pattern


def _checked_host(host: str) -> str:
    try:
        parsed = parse_host(host).ascii
    except ConfigurationError as exc:
        raise ValueError(exc.problem) from exc
    if parsed != host:
        raise ValueError(f"write '{host}' in lower-case ASCII form: '{parsed}'")
    return host
