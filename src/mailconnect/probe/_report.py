"""The report of one connection test: the steps, the verdict, the diagnosis, the message for IT."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from mailconnect.diagnosis import Diagnosis
from mailconnect.findings import Finding, blocking
from mailconnect.probe._steps import StepName, StepResult, StepStatus
from mailconnect.smtp import TranscriptLine

__all__ = ["Report"]


@dataclass(frozen=True, slots=True)
class Report:
    """Everything one connection test found out. Contains no secret.

    ``settings`` is what was tested, as text (host, port, security, login name, sender; never a
    password or token). ``findings`` are verdicts about the test itself, such as certificate
    checks being off. ``it_message`` is the text for the company's IT department when a step
    failed. ``operator_note`` is for the operator's logs only (why the network guard refused,
    for example) and is left out of :meth:`as_dict` unless asked for: a tenant must not learn it.
    """

    settings: Mapping[str, str]
    steps: tuple[StepResult, ...]
    findings: tuple[Finding, ...] = ()
    transcript: tuple[TranscriptLine, ...] = ()
    duration_ms: float = 0.0
    it_message: str | None = None
    message_id: str | None = None
    operator_note: str | None = None

    @property
    def passed(self) -> bool:
        """True when no step failed and no finding is an error."""
        return self.failed_step is None and not blocking(self.findings)

    @property
    def verdict(self) -> str:
        return "passed" if self.passed else "failed"

    @property
    def failed_step(self) -> StepResult | None:
        return next((s for s in self.steps if s.status is StepStatus.FAILED), None)

    @property
    def diagnosis(self) -> Diagnosis | None:
        failed = self.failed_step
        return failed.diagnosis if failed else None

    def step(self, name: StepName | str) -> StepResult:
        wanted = StepName(name)
        return next(s for s in self.steps if s.name is wanted)

    def as_dict(self, *, include_internal: bool = False) -> dict[str, object]:
        """Plain JSON values: the whole report."""
        failed = self.failed_step
        data: dict[str, object] = {
            "verdict": self.verdict,
            "passed": self.passed,
            "settings": dict(self.settings),
            "failed_step": failed.name.value if failed else None,
            "diagnosis": self.diagnosis.as_dict() if self.diagnosis else None,
            "it_message": self.it_message,
            "message_id": self.message_id,
            "duration_ms": round(self.duration_ms, 1),
            "steps": [step.as_dict() for step in self.steps],
            "findings": [finding.as_dict() for finding in self.findings],
            "transcript": [line.as_dict() for line in self.transcript],
        }
        if include_internal:
            data["operator_note"] = self.operator_note
        return data
