"""Turn a reply, a pasted error or a detected failure into a :class:`Diagnosis`.

All three entry points use the table in ``replies.toml`` and pick the most specific entry whose
conditions hold. Specificity adds up: a matching text pattern 6, an exact enhanced code 5 (a class
and subject such as ``5.7``: 3, a class alone: 1), the basic code 2, the caller's provider 4, the
port 3, the stage 2, the security 2. The basic code weighs least because the enhanced code says
more (``550`` may be about the sender, a recipient or the content; ``5.7.1`` is about policy), and
a text pattern most: it names the very reply. Ties go to the entry written first, so the table
lists specific entries before general ones. When nothing matches, the table's fallback advice is
given with cause ``unknown``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from mailconnect.diagnosis.redact import redact
from mailconnect.diagnosis.reply import (
    ParsedReply,
    normalise,
    parse_reply,
    port_hint,
    reply_from,
)
from mailconnect.diagnosis.result import Diagnosis
from mailconnect.diagnosis.table import Advice, Entry, load_replies
from mailconnect.diagnosis.vocabulary import Failure, Stage
from mailconnect.providers import load_catalogue
from mailconnect.settings import Security, parse_choice, parse_port

__all__ = ["Context", "diagnose_failure", "diagnose_reply", "explain"]

_PATTERN, _EXACT, _SUBJECT, _CLASS, _CODE = 6, 5, 3, 1, 2
_PROVIDER, _PORT, _STAGE, _SECURITY = 4, 3, 2, 2
_MAX_DETAIL = 500  # characters of a failure detail kept in the diagnosis


@dataclass(frozen=True, slots=True)
class Context:
    """What the caller knows about where a reply came from; None where it does not know."""

    provider: str | None = None
    stage: Stage | None = None
    port: int | None = None
    security: Security | None = None

    @classmethod
    def parse(
        cls,
        *,
        provider: str | None = None,
        stage: str | Stage | None = None,
        port: int | str | None = None,
        security: str | Security | None = None,
    ) -> Context:
        """Validated context; an unknown value raises ConfigurationError naming the field."""
        parsed_stage = parse_choice(Stage, stage, "stage") if stage else None
        return cls(
            provider=load_catalogue().get(provider, "provider").id if provider else None,
            stage=None if parsed_stage is Stage.UNKNOWN else parsed_stage,
            port=parse_port(port) if port is not None else None,
            security=parse_choice(Security, security, "security") if security else None,
        )


def explain(
    text: str,
    *,
    provider: str | None = None,
    stage: str | Stage | None = None,
    port: int | str | None = None,
    security: str | Security | None = None,
) -> Diagnosis:
    """The diagnosis for a reply or an error a person copied from a log, a bounce or a tool.

    Never raises on any text; an invalid ``provider``, ``stage``, ``port`` or ``security`` raises
    :class:`~mailconnect.errors.ConfigurationError` naming the field. A port named in the text
    (``connect ETIMEDOUT 203.0.113.5:25``) is used when ``port`` is not given.
    """
    context = Context.parse(provider=provider, stage=stage, port=port, security=security)
    raw = normalise(text)
    if context.port is None:
        context = replace(context, port=port_hint(raw))
    reply = parse_reply(raw)
    return _best(reply, (reply.text, raw), context)


def diagnose_reply(
    code: int | None,
    message: str,
    *,
    provider: str | None = None,
    stage: str | Stage | None = None,
    port: int | str | None = None,
    security: str | Security | None = None,
) -> Diagnosis:
    """The diagnosis for a reply a client library already split into code and message."""
    context = Context.parse(provider=provider, stage=stage, port=port, security=security)
    reply = reply_from(code, message)
    return _best(reply, (reply.text, normalise(message)), context)


def diagnose_failure(
    kind: str | Failure,
    *,
    port: int | str | None = None,
    security: str | Security | None = None,
    provider: str | None = None,
    detail: str | None = None,
) -> Diagnosis:
    """The diagnosis for a failure the connection test detected (see :class:`Failure`).

    ``detail`` is the error text (an exception message); it is shown as the reply and refines
    the choice between entries for the same kind. The advice depends on the port and security:
    a timeout on port 25 means a blocked port, wrong-version TLS on 587 means "choose starttls".
    """
    failure = parse_choice(Failure, kind, "kind")
    context = Context.parse(provider=provider, port=port, security=security)
    text = normalise(detail or "")
    if context.port is None:
        context = replace(context, port=port_hint(text))
    best: tuple[int, Entry] | None = None
    for entry in load_replies().entries:
        if failure not in entry.failures:
            continue
        score = _context_score(entry, context)
        if score is None:
            continue
        if entry.regex and text and entry.regex.search(text):
            score += _PATTERN
        if best is None or score > best[0]:
            best = (score, entry)
    # A failure is what the client saw, not a server reply: a code quoted inside it (a greeting
    # seen on a second connection, say) must not be shown as if the server had answered it.
    reply = ParsedReply(None, None, text[:_MAX_DETAIL]) if text.strip() else None
    if best is None:  # cannot happen: the table is checked to have an entry for every kind
        return _diagnosis(load_replies().fallback, reply, None)
    return _diagnosis(best[1], reply, best[1].id)


def _best(reply: ParsedReply, haystacks: tuple[str, ...], context: Context) -> Diagnosis:
    table = load_replies()
    best: tuple[int, Entry] | None = None
    for entry in table.entries:
        score = _score(entry, reply, haystacks, context)
        if score is not None and (best is None or score > best[0]):
            best = (score, entry)
    shown = reply if (reply.code is not None or reply.enhanced or reply.text) else None
    if best is None:
        return _diagnosis(table.fallback, shown, None)
    return _diagnosis(best[1], shown, best[1].id)


def _score(
    entry: Entry, reply: ParsedReply, haystacks: tuple[str, ...], context: Context
) -> int | None:
    score = _context_score(entry, context)
    text = _text_score(entry, reply, haystacks)
    if score is None or text is None:
        return None
    return score + text


def _context_score(entry: Entry, context: Context) -> int | None:
    score = 0
    if entry.providers:
        if context.provider in entry.providers:
            score += _PROVIDER
        elif entry.pattern is None:
            return None
    for wanted, known, weight in (
        (entry.stages, context.stage, _STAGE),
        (entry.ports, context.port, _PORT),
        (entry.security, context.security, _SECURITY),
    ):
        if wanted:
            if known not in wanted:
                return None
            score += weight
    return score


def _text_score(entry: Entry, reply: ParsedReply, haystacks: tuple[str, ...]) -> int | None:
    if entry.failures and (reply.code is not None or reply.enhanced):
        return None  # a client-side error entry never explains a server's reply
    score = 0
    if entry.enhanced:
        points = _enhanced_score(entry.enhanced, reply)
        if points is None:
            return None
        score += points
    if entry.code is not None:
        if reply.code is not None:
            if reply.code != entry.code:
                return None
            score += _CODE
        elif not (entry.enhanced and entry.enhanced.count(".") == 2):
            return None  # without a code in the text, only an exact enhanced code identifies it
    if entry.regex:
        if not any(entry.regex.search(text) for text in haystacks):
            return None
        score += _PATTERN
    return score


def _enhanced_score(wanted: str, reply: ParsedReply) -> int | None:
    if "." not in wanted:
        return _CLASS if reply.klass == int(wanted) else None
    if reply.enhanced is None:
        return None
    if reply.enhanced == wanted:
        return _EXACT
    if wanted.count(".") == 1 and reply.enhanced.startswith(wanted + "."):
        return _SUBJECT
    return None


def _diagnosis(advice: Advice, reply: ParsedReply | None, entry_id: str | None) -> Diagnosis:
    return Diagnosis(
        cause=advice.cause,
        title=advice.title,
        explanation=advice.explanation,
        actor=advice.actor,
        fix_steps=tuple(advice.fix),
        doc_url=advice.doc_url,
        retryable=advice.retryable,
        reply=replace(reply, text=redact(reply.text)) if reply else None,
        matched_entry=entry_id,
    )
