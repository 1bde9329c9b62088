"""Find the SMTP reply in text a person pasted: a log line, a bounce, another program's error.

Pure functions, no IO. :func:`parse_reply` never raises: text without a recognisable reply comes
back as a :class:`ParsedReply` without a code, carrying the (shortened) text itself, so that
client-side errors such as ``[SSL: WRONG_VERSION_NUMBER]`` can still be matched.

Recognised shapes::

    535-5.7.8 Username and Password not accepted. ...          multi-line, code on every line
    535 5.7.8  https://support.google.com/mail/?p=BadCredentials
    smtplib.SMTPAuthenticationError: (535, b'5.7.8 Username ...\\n5.7.8 https://...')
    aiosmtplib.errors.SMTPAuthenticationError: (535, '5.7.139 Authentication unsuccessful, ...')
    javax.mail.AuthenticationFailedException: 535 5.7.3 Authentication unsuccessful
    Error: Invalid login: 535-5.7.8 Username ...                 nodemailer, also response: '...'
    The server response was: 5.7.57 Client not authenticated   an enhanced code without a code
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["MAX_INPUT", "ParsedReply", "parse_reply", "port_hint", "reply_from"]

MAX_INPUT = 32_000  # characters of pasted text looked at; the reply is near the start in practice
MAX_TEXT = 2_000  # characters of reply text kept

# Reply codes an SMTP server really sends (RFC 5321, 4954, 3030, 7504, plus Exchange's 432).
# Restricting to these keeps numbers such as "after 300 seconds" from passing for a reply.
_CODES = frozenset(
    {211, 214, 220, 221, 235, 250, 251, 252, 334, 354, 421, 432, 450, 451, 452, 454, 455}
    | {500, 501, 502, 503, 504, 521, 523, 530, 534, 535, 538, 550, 551, 552, 553, 554, 555, 556}
)
_CODE = re.compile(r"(?<![\w.:/\\@#$%+=&?*~-])(?P<code>[2-5][0-5]\d)(?P<sep>[ -]|$)", re.M)
_ENHANCED = r"[245]\.\d{1,3}\.\d{1,3}"
_ENHANCED_AT_START = re.compile(rf"^\s*(?P<enhanced>{_ENHANCED})(?=\s|$)")
_ENHANCED_ANYWHERE = re.compile(rf"(?<![\w.])(?P<enhanced>{_ENHANCED})(?![\w.])")
# A Python exception's args: (535, b'...') or (535, '...'); no nested quantifiers, so linear.
_TUPLE = re.compile(
    r"\(\s*(?P<code>\d{3})\s*,\s*[bBuU]?(?:'(?P<single>(?:\\.|[^\\'])*)'|\"(?P<double>(?:\\.|[^\\\"])*)\")"
)
_ESCAPES = {"n": "\n", "r": "\n", "t": " ", "'": "'", '"': '"', "\\": "\\"}
_ESCAPE = re.compile(r"\\(.)")
_LITERAL_NEWLINE = re.compile(r"(?:\\r)?\\n")
_SPACES = re.compile(r"\s+")
_PORTS = (
    re.compile(r"\bport\b[\s:=]*(\d{1,5})\b", re.I),
    re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}:(\d{1,5})\b"),
    re.compile(r"\]:(\d{1,5})\b"),
)


@dataclass(frozen=True, slots=True)
class ParsedReply:
    """A server reply: basic code, enhanced status code (RFC 3463) and text.

    ``code`` and ``enhanced`` are None when the text has none (a client-side error); ``text`` is
    then the whole error text, shortened.
    """

    code: int | None
    enhanced: str | None
    text: str

    @property
    def klass(self) -> int | None:
        """2, 4 or 5: success, transient or permanent (from the enhanced code or the code)."""
        if self.enhanced:
            return int(self.enhanced[0])
        if self.code is not None:
            return self.code // 100
        return None

    def __str__(self) -> str:
        return " ".join(str(part) for part in (self.code, self.enhanced, self.text) if part)

    def as_dict(self) -> dict[str, int | str | None]:
        return {"code": self.code, "enhanced": self.enhanced, "text": self.text}


@dataclass(frozen=True, slots=True)
class _Found:
    position: int
    reply: ParsedReply


def parse_reply(text: str) -> ParsedReply:
    """The most relevant SMTP reply in ``text``: the first failure (4xx, 5xx), else the last one.

    Never raises. Without any reply code the result has ``code=None`` and the text itself.
    """
    raw = normalise(text)
    found = sorted(_tuple_replies(raw) + _line_replies(raw), key=lambda f: f.position)
    failures = [f.reply for f in found if (f.reply.code or 0) >= 400]
    if failures:
        # The same reply often appears twice (a summary line, then the full response): keep the
        # fullest copy of the first failure.
        same = [
            r for r in failures if (r.code, r.enhanced) == (failures[0].code, failures[0].enhanced)
        ]
        return max(same, key=lambda r: len(r.text))
    if found:
        return found[-1].reply
    enhanced = _enhanced_only(raw)
    if enhanced is not None:
        return enhanced
    return ParsedReply(None, None, _clean(raw))


def reply_from(code: int | None, message: str) -> ParsedReply:
    """A reply from a code and a message a client library already separated.

    The message may hold several lines, each starting with the enhanced code (as smtplib and
    aiosmtplib give them).
    """
    usable = code if isinstance(code, int) and code in _CODES else None
    return _body(usable, normalise(message).split("\n"))


def normalise(text: str) -> str:
    """The text as lines: shortened, with CRLF and literal ``\\n`` escapes turned into newlines."""
    if not isinstance(text, str):
        text = str(text)
    text = text[:MAX_INPUT].replace("\r\n", "\n").replace("\r", "\n")
    return _LITERAL_NEWLINE.sub("\n", text)


def port_hint(text: str) -> int | None:
    """A port number the error text names (``port 25``, ``203.0.113.5:25``), if any."""
    raw = normalise(text)
    for pattern in _PORTS:
        match = pattern.search(raw)
        if match and 1 <= int(match.group(1)) <= 65535:
            return int(match.group(1))
    return None


def _tuple_replies(raw: str) -> list[_Found]:
    found = []
    for match in _TUPLE.finditer(raw):
        code = int(match.group("code"))
        if code not in _CODES:
            continue
        body = match.group("single") if match.group("single") is not None else match.group("double")
        message = _ESCAPE.sub(lambda m: _ESCAPES.get(m.group(1), m.group(0)), body or "")
        found.append(_Found(match.start(), _body(code, message.split("\n"))))
    return found


def _line_replies(raw: str) -> list[_Found]:
    lines = raw.split("\n")
    offsets = [0]
    for line in lines[:-1]:
        offsets.append(offsets[-1] + len(line) + 1)
    found = []
    index = 0
    while index < len(lines):
        match = _code_in(lines[index])
        if match is None:
            index += 1
            continue
        code, quote = match.group("code"), _quote_before(lines[index], match.start())
        block = [lines[index][match.end() :]]
        more = match.group("sep") == "-"
        start = index
        index += 1
        while more and index < len(lines):
            follow = _code_in(lines[index])
            if follow is None or follow.group("code") != code:
                break
            block.append(lines[index][follow.end() :])
            more = follow.group("sep") == "-"
            index += 1
        index = _continuation_lines(lines, index, block)
        if quote:
            block[-1] = re.sub(rf"{quote}[\s,;)\]}}]*$", "", block[-1])
        found.append(_Found(offsets[start] + match.start(), _body(int(code), block)))
    return found


def _continuation_lines(lines: list[str], index: int, block: list[str]) -> int:
    """Lines after a reply that repeat its enhanced code (a message with its codes stripped)."""
    first = _ENHANCED_AT_START.match(block[0])
    if first is None:
        return index
    while index < len(lines):
        follow = _ENHANCED_AT_START.match(lines[index])
        if follow is None or follow.group("enhanced") != first.group("enhanced"):
            break
        block.append(lines[index])
        index += 1
    return index


def _code_in(line: str) -> re.Match[str] | None:
    for match in _CODE.finditer(line):
        if int(match.group("code")) in _CODES:
            return match
    return None


def _quote_before(line: str, position: int) -> str:
    before = line[position - 1 : position] if position else ""
    return before if before in {"'", '"'} else ""


def _enhanced_only(raw: str) -> ParsedReply | None:
    match = _ENHANCED_ANYWHERE.search(raw)
    if match is None:
        return None
    lines = raw[match.start() :].split("\n")
    block = [lines[0]]
    _continuation_lines(lines, 1, block)
    return _body(None, block)


def _body(code: int | None, lines: list[str]) -> ParsedReply:
    first = _ENHANCED_AT_START.match(lines[0]) if lines else None
    enhanced = first.group("enhanced") if first else None
    if enhanced and code is not None and enhanced[0] != str(code)[0]:
        enhanced = None
    parts = []
    for line in lines:
        stripped = line.strip()
        if enhanced and stripped.startswith(enhanced):
            stripped = stripped[len(enhanced) :]
        parts.append(stripped)
    return ParsedReply(code, enhanced, _clean(" ".join(parts)))


def _clean(text: str) -> str:
    return _SPACES.sub(" ", text).strip()[:MAX_TEXT]
