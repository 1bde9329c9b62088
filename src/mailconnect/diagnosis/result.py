"""A diagnosis: what went wrong, who must act, and the exact steps that fix it."""

from __future__ import annotations

from dataclasses import dataclass

from mailconnect.diagnosis.reply import ParsedReply
from mailconnect.diagnosis.vocabulary import Actor, Cause

__all__ = ["Diagnosis"]


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """The plain-language verdict on one failure.

    ``cause`` is stable (see :class:`Cause`); ``actor`` says who has to do something;
    ``fix_steps`` are the steps in order, some of them commands to copy (PowerShell, for example);
    ``retryable`` says whether trying again later, unchanged, can succeed. ``reply`` is the
    server's reply or the client error the diagnosis is about, with secrets masked;
    ``matched_entry`` is the id of the ``replies.toml`` entry, None when nothing matched.
    """

    cause: Cause
    title: str
    explanation: str
    actor: Actor
    fix_steps: tuple[str, ...]
    doc_url: str | None
    retryable: bool
    reply: ParsedReply | None = None
    matched_entry: str | None = None

    def as_dict(self) -> dict[str, object]:
        """Plain JSON-ready values."""
        return {
            "cause": self.cause.value,
            "title": self.title,
            "explanation": self.explanation,
            "actor": self.actor.value,
            "fix_steps": list(self.fix_steps),
            "doc_url": self.doc_url,
            "retryable": self.retryable,
            "reply": self.reply.as_dict() if self.reply else None,
            "matched_entry": self.matched_entry,
        }
