"""The exceptions mailconnect raises.

Configuration errors (something a person must change in a setting or a data file) are kept apart
from delivery errors (something that happened while talking to a server), so that a caller can
tell "fix your input" from "try again later" with one ``except`` clause::

    MailconnectError
    ├── ConfigurationError (also ValueError)     a setting is invalid; names the field and the fix
    │   └── CatalogueError                       a data file shipped with mailconnect is malformed
    └── DeliveryError                            talking to a server went wrong
        ├── DiscoveryError                       discovery could not run at all (bad resolver, ...)
        └── TargetUnreachable (also ConnectionError)   netguard: the host cannot be reached or is
                                                 not allowed; both look the same to a tenant

Every message says what is wrong and how to fix it, and never contains a secret.
"""

from __future__ import annotations

__all__ = [
    "CatalogueError",
    "ConfigurationError",
    "DeliveryError",
    "DiscoveryError",
    "MailconnectError",
]


class MailconnectError(Exception):
    """Root of every exception mailconnect raises on purpose."""


class ConfigurationError(MailconnectError, ValueError):
    """A setting cannot be used as given.

    ``field`` names the setting (``"port"``, ``"sender.address"``), ``problem`` says what is wrong
    in plain language and ``fix`` says what to do instead.
    """

    def __init__(self, field: str, problem: str, fix: str) -> None:
        self.field = field
        self.problem = problem
        self.fix = fix
        super().__init__(f"{field}: {problem}. {fix}")

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "problem": self.problem, "fix": self.fix}


class CatalogueError(ConfigurationError):
    """A data file (provider catalogue, rule texts, reply explanations) does not validate."""


class DeliveryError(MailconnectError):
    """Something went wrong while talking to a server (DNS, TCP, TLS or SMTP)."""


class DiscoveryError(DeliveryError):
    """Discovery could not run at all, for example because the resolver address is unusable."""
