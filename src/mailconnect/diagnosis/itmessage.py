"""The message for the IT department: plain text an admin can act on, without any secret."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from mailconnect.diagnosis.redact import HIDDEN, redact
from mailconnect.diagnosis.result import Diagnosis
from mailconnect.diagnosis.vocabulary import Actor, Stage

__all__ = ["it_message"]

_SECRET_KEY = re.compile(
    r"pass|pwd|secret|token|api[_ -]?key|credential|private|cookie", re.IGNORECASE
)
# Who acts, as said to the IT department (Actor.label speaks to the person setting up).
_WHO = {
    Actor.YOU: "the person setting up the connection (no change needed on your side)",
    Actor.IT_ADMIN: "you: the IT department or mail administrator",
    Actor.PROVIDER: "the mail provider",
    Actor.NETWORK: "the network: a firewall, the internet provider or the cloud host",
    Actor.APPLICATION: "the operator of the sending application",
}
_STEP_NAMES = {
    Stage.RESOLVE: "looking up the server's name (DNS)",
    Stage.CONNECT: "connecting to the server",
    Stage.TLS: "starting encryption (TLS handshake)",
    Stage.EHLO: "greeting the server (EHLO)",
    Stage.STARTTLS: "switching to encryption (STARTTLS)",
    Stage.AUTH: "signing in (AUTH)",
    Stage.MAIL_FROM: "naming the sender (MAIL FROM)",
    Stage.RCPT_TO: "naming the recipients (RCPT TO)",
    Stage.DATA: "sending the message (DATA)",
    Stage.QUIT: "closing the connection (QUIT)",
    Stage.UNKNOWN: "an unknown step",
}


def it_message(
    diagnosis: Diagnosis,
    *,
    settings_summary: Mapping[str, str],
    step: str | Stage,
    server_reply: str | None,
    secrets: Iterable[str] = (),
) -> str:
    """Text to send to the company's IT department: the settings, the failing step, the reply,
    the cause and the fix.

    Never contains a secret: settings whose name sounds secret (password, token, key) are
    hidden, and every value and the reply go through :func:`redact`, which also hides the
    ``secrets`` given here and their base64 form.
    """
    hidden = tuple(secrets)
    lines = [
        f"Subject: E-mail connection problem: {diagnosis.title}",
        "",
        "Hello,",
        "",
        "An application tried to send e-mail through our mail server and failed. Below is what",
        "happened and what needs to change. No password or token is included in this message.",
        "",
        f"Problem: {diagnosis.title}",
        f"Who needs to act: {_WHO[diagnosis.actor]}",
        f"Failing step: {redact(_step_name(step), hidden)}",
        "",
        "Server reply:",
        f"    {_clean(server_reply, hidden) if server_reply else '(none: no reply was received)'}",
        "",
        "Settings used:",
        *(f"    {key}: {_setting(key, value, hidden)}" for key, value in settings_summary.items()),
        "",
        "What it means:",
        f"    {diagnosis.explanation}",
        "",
        "How to fix it:",
        *(f"    {n}. {redact(text, hidden)}" for n, text in enumerate(diagnosis.fix_steps, 1)),
    ]
    if diagnosis.doc_url:
        lines += ["", f"More information: {diagnosis.doc_url}"]
    reference = f"cause {diagnosis.cause.value}"
    if diagnosis.matched_entry:
        reference += f", rule {diagnosis.matched_entry}"
    lines += [
        "",
        f"(Reference for support: {reference}; retrying later "
        f"{'may' if diagnosis.retryable else 'will not'} help.)",
    ]
    return "\n".join(lines) + "\n"


def _step_name(step: str | Stage) -> str:
    text = str(step).strip()
    for stage, name in _STEP_NAMES.items():
        if text.lower() == stage.value:
            return f"{name} [{stage.value}]"
    return text or _STEP_NAMES[Stage.UNKNOWN]


def _setting(key: str, value: object, secrets: tuple[str, ...]) -> str:
    if _SECRET_KEY.search(key):
        return HIDDEN
    return _clean(str(value), secrets)


def _clean(text: str, secrets: tuple[str, ...]) -> str:
    """Redacted, on indented lines."""
    return redact(text, secrets).strip().replace("\n", "\n    ")
