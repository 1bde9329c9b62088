"""The exceptions mailconnect raises.

Configuration errors (something a person must change in a setting or a data file) are kept apart
from delivery errors (something that happened while talking to a server), so that a caller can
tell "fix your input" from "try again later" with one ``except`` clause::

    MailconnectError
    ├── ConfigurationError (also ValueError)     a setting is invalid; names the field and the fix
    │   └── CatalogueError                       a data file shipped with mailconnect is malformed
    ├── NotFound (also LookupError)              no such row *for this tenant* (no existence oracle)
    ├── SecretError                              a stored secret cannot be used
    │   ├── SecretUndecryptable                  no configured key opens it (missing key, altered)
    │   └── SecretBindingError                   it was encrypted for another row (copied)
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
    "NotFound",
    "SecretBindingError",
    "SecretError",
    "SecretUndecryptable",
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


class NotFound(MailconnectError, LookupError):
    """No such ``kind`` (``"connection"``, ``"tenant"``) with this id for this tenant.

    A row of another tenant is reported exactly like a missing one, so ids cannot be probed.
    """

    def __init__(self, kind: str, identifier: object) -> None:
        self.kind = kind
        self.identifier = str(identifier)
        super().__init__(f"no {kind} with id {identifier}")


class SecretError(MailconnectError):
    """A stored secret cannot be used. The message never contains the secret or a key."""


class SecretUndecryptable(SecretError):
    """No configured key opens the value: its key is missing, or the stored value was altered."""


class SecretBindingError(SecretError):
    """The value decrypts, but it was encrypted for another tenant, connection or purpose."""


class DeliveryError(MailconnectError):
    """Something went wrong while talking to a server (DNS, TCP, TLS or SMTP)."""


class DiscoveryError(DeliveryError):
    """Discovery could not run at all, for example because the resolver address is unusable."""
