"""Diagnoses: every failure in plain language, with its cause, who must act and the exact fix.

The knowledge lives in ``replies.toml`` (known replies and client errors, checked when loaded);
the code here parses replies, picks the most specific entry and writes the message for IT::

    from mailconnect.diagnosis import explain
    explain("535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled ...")
    # Diagnosis(cause=Cause.SMTP_AUTH_DISABLED, actor=Actor.IT_ADMIN, fix_steps=(...), ...)

Modules: ``vocabulary`` (causes, actors, stages, failure kinds), ``reply`` (parsing pasted text),
``table`` (the data file's shape and loader), ``match`` (choosing an entry), ``result`` (the
Diagnosis), ``redact`` (masking secrets) and ``itmessage`` (the text for the IT department).
"""

from mailconnect.diagnosis.itmessage import it_message
from mailconnect.diagnosis.match import Context, diagnose_failure, diagnose_reply, explain
from mailconnect.diagnosis.redact import redact
from mailconnect.diagnosis.reply import ParsedReply, parse_reply, port_hint, reply_from
from mailconnect.diagnosis.result import Diagnosis
from mailconnect.diagnosis.table import Entry, Replies, load_replies, parse_replies
from mailconnect.diagnosis.vocabulary import Actor, Cause, Failure, Stage

__all__ = [
    "Actor",
    "Cause",
    "Context",
    "Diagnosis",
    "Entry",
    "Failure",
    "ParsedReply",
    "Replies",
    "Stage",
    "diagnose_failure",
    "diagnose_reply",
    "explain",
    "it_message",
    "load_replies",
    "parse_replies",
    "parse_reply",
    "port_hint",
    "redact",
    "reply_from",
]
