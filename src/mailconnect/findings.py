"""What a rule says about settings: a finding with a stable code, a severity and a remedy."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum

__all__ = ["Finding", "Severity", "blocking"]


class Severity(StrEnum):
    ERROR = "error"  # cannot work: the settings must not be used
    WARNING = "warning"  # may work; the message explains what to check


@dataclass(frozen=True, slots=True)
class Finding:
    """One plain-language verdict about a setting.

    ``code`` is stable (safe to match in code and translations); ``field`` names the setting the
    finding is about, when there is one; ``source`` says where the rule comes from (a URL or RFC).
    """

    code: str
    severity: Severity
    message: str
    remedy: str
    source: str
    field: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return {
            key: str(value) if value is not None else None for key, value in asdict(self).items()
        }


def blocking(findings: list[Finding] | tuple[Finding, ...]) -> bool:
    """True when any finding is an error: such settings must not be saved or used."""
    return any(f.severity is Severity.ERROR for f in findings)
