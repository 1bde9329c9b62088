"""Mask secrets in text that may be shown, logged or sent to someone else.

:func:`redact` hides what commonly leaks into SMTP errors and transcripts: the base64 payload of
``AUTH PLAIN``/``LOGIN``/``XOAUTH2`` commands, server challenges (``334 ...``) and the client's
answers to them, ``password=``/``token:``-like fields, ``Bearer`` tokens, passwords in URLs, and
any secret the caller names (also in its base64 form).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable

__all__ = ["HIDDEN", "redact"]

HIDDEN = "[hidden]"

_B64 = r"[A-Za-z0-9+/]+={0,2}"
_AUTH = re.compile(rf"(?P<keep>\bAUTH\s+[A-Z0-9_-]+\s+)(?P<secret>{_B64})", re.IGNORECASE)
_CHALLENGE = re.compile(rf"(?P<keep>(?<!\d)334[ -])(?P<secret>{_B64})")
_TOKEN = re.compile(_B64)
_REPLY_LINE = re.compile(r"^\s*[2-5]\d\d[ -]")
_FIELD = re.compile(
    r"(?P<keep>\b(?:password|passwd|pwd|pass|secret|client_secret|access_token|refresh_token"
    r"|id_token|token|api[_-]?key|apikey)\b[\"']?\s*[:=]\s*[\"']?)(?P<secret>[^\s\"',;&]+)",
    re.IGNORECASE,
)
_BEARER = re.compile(r"(?P<keep>\bBearer\s+)(?P<secret>[A-Za-z0-9._~+/=-]{6,})", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"(?P<keep>\b[a-z][a-z0-9+.-]*://[^/\s:@]+:)(?P<secret>[^@\s/]+)(?=@)")
_API_KEY = re.compile(r"\bSG\.[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}")


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every secret-looking part replaced by ``[hidden]``."""
    for secret in secrets:
        if secret:
            encoded = base64.b64encode(secret.encode("utf-8")).decode("ascii")
            text = text.replace(secret, HIDDEN).replace(encoded, HIDDEN)
    text = _answers_to_challenges(text)
    for pattern in (_AUTH, _CHALLENGE, _FIELD, _BEARER, _URL_PASSWORD):
        text = pattern.sub(_mask, text)
    return _API_KEY.sub(HIDDEN, text)


def _mask(match: re.Match[str]) -> str:
    secret = match.group("secret")
    if match.re is _AUTH and not _looks_encoded(secret):
        return match.group(0)  # a mechanism list such as "AUTH PLAIN LOGIN", not a payload
    return match.group("keep") + HIDDEN


def _looks_encoded(token: str) -> bool:
    """Base64 of credentials, not a mechanism name such as LOGIN or XOAUTH2."""
    return len(token) >= 8 and (bool(re.search(r"[a-z+/=]", token)) or len(token) >= 20)


def _answers_to_challenges(text: str) -> str:
    """Mask the client's line after a ``334`` challenge: it is the username, password or token."""
    lines = text.split("\n")
    for index in range(1, len(lines)):
        if not re.search(r"(?<!\d)334(?:[ -]|$)", lines[index - 1]):
            continue
        if _REPLY_LINE.match(lines[index]):
            continue
        lines[index] = _mask_last_token(lines[index])
    return "\n".join(lines)


def _mask_last_token(line: str) -> str:
    stripped = line.rstrip()
    cut = max(stripped.rfind(separator) for separator in " \t:>") + 1
    if cut < len(stripped) and _TOKEN.fullmatch(stripped, cut):
        return stripped[:cut] + HIDDEN
    return line
