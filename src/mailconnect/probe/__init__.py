"""The connection test ("probe"): every step of a real SMTP session, each with its own verdict.

    resolve -> guard -> connect -> greeting -> EHLO -> STARTTLS -> certificate -> EHLO -> AUTH
            -> MAIL FROM -> RCPT TO -> [DATA] -> RSET -> QUIT      (implicit TLS: connect -> tls)

:func:`probe` tests one setting and returns a :class:`Report`; :func:`probe_candidates` tests
several endpoints at once (auto mode) and recommends one. Modules: ``_plan`` (validation before
IO), ``_run`` (the steps), ``_steps`` and ``_report`` (the result types), ``_timeouts``,
``_diagnose`` (the adapter to the diagnosis package), ``_symptoms`` (second opinions on a TLS mode
mismatch), ``_envelope`` and ``_message`` (the test message), ``_auto`` (auto mode).
"""

from mailconnect.probe._auto import (
    AutoReport,
    CandidateResult,
    SkippedEndpoint,
    endpoints_to_try,
    probe_candidates,
    recommend,
    unencrypted_for_login,
)
from mailconnect.probe._plan import VERIFICATION_OFF, Plan, prepare, settings_summary
from mailconnect.probe._report import Report
from mailconnect.probe._resolver import NameserverResolver
from mailconnect.probe._run import Probe, probe
from mailconnect.probe._steps import StepName, StepResult, StepStatus, stage_of, steps_for
from mailconnect.probe._timeouts import Deadline, Timeouts

__all__ = [
    "VERIFICATION_OFF",
    "AutoReport",
    "CandidateResult",
    "Deadline",
    "NameserverResolver",
    "Plan",
    "Probe",
    "Report",
    "SkippedEndpoint",
    "StepName",
    "StepResult",
    "StepStatus",
    "Timeouts",
    "endpoints_to_try",
    "prepare",
    "probe",
    "probe_candidates",
    "recommend",
    "settings_summary",
    "stage_of",
    "steps_for",
    "unencrypted_for_login",
]
