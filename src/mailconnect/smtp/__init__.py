"""The SMTP session: aiosmtplib on a pinned address, with mailconnect's security rules.

Modules, one concept each:

- ``_connect``: the TCP connection to the network guard's pinned address (never to a name);
- ``_session``: :class:`SmtpSession`, the conversation (greeting, EHLO, STARTTLS, AUTH, MAIL,
  RCPT, DATA, RSET, QUIT) and the rules it enforces whatever the caller does;
- ``_tls``: the TLS policy (verification on by default, TLS 1.2 minimum) and :class:`TlsInfo`;
- ``_injection``: the STARTTLS injection check;
- ``_pipeline``: PIPELINING (RFC 2920): the reply reader and its strict parser;
- ``_finaldot``: whether a message's final "." may have left (deferred or uncertain);
- ``_capabilities``, ``_mechanisms``, ``_transcript``, ``_errors``: pure decisions (EHLO parsing,
  AUTH mechanism choice and payloads, transcript redaction, error classification).
"""

from mailconnect.smtp._capabilities import Capabilities, parse_ehlo
from mailconnect.smtp._connect import Connected, connect_pinned, ehlo_literal
from mailconnect.smtp._errors import Reply, SessionError, classify
from mailconnect.smtp._finaldot import FinalDot
from mailconnect.smtp._injection import ReceiveTap, bytes_after_reply
from mailconnect.smtp._mechanisms import (
    Exchange,
    Mechanism,
    choose_mechanism,
    exchange,
    usable_mechanisms,
)
from mailconnect.smtp._pipeline import ReplyFormatError, parse_replies
from mailconnect.smtp._session import Pipelined, SmtpSession
from mailconnect.smtp._tls import MIN_TLS_VERSION, TlsInfo, TlsPolicy, describe_tls
from mailconnect.smtp._transcript import (
    Direction,
    Transcript,
    TranscriptLine,
    client_text,
    reply_lines,
)

__all__ = [
    "MIN_TLS_VERSION",
    "Capabilities",
    "Connected",
    "Direction",
    "Exchange",
    "FinalDot",
    "Mechanism",
    "Pipelined",
    "ReceiveTap",
    "Reply",
    "ReplyFormatError",
    "SessionError",
    "SmtpSession",
    "TlsInfo",
    "TlsPolicy",
    "Transcript",
    "TranscriptLine",
    "bytes_after_reply",
    "choose_mechanism",
    "classify",
    "client_text",
    "connect_pinned",
    "describe_tls",
    "ehlo_literal",
    "exchange",
    "parse_ehlo",
    "parse_replies",
    "reply_lines",
    "usable_mechanisms",
]
