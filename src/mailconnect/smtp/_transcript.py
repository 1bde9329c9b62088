"""The transcript of a session: what the client sent (C:) and the server answered (S:).

Secrets never enter it. Client lines are redacted by :func:`client_text`, from the command itself
rather than from a pattern over finished text: the argument of every AUTH command and every
client line that answers a 334 challenge are replaced by ``[hidden]``. Server replies (and notes)
go through the diagnosis package's :func:`redact` with the session's secrets, once per reply, so a
server that echoes a password, a token or an AUTH payload cannot leak it either (replies to AUTH
get the full pattern-based redaction, the others the cheaper removal of the secrets' exact
forms); the session hands on only that cleaned text.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterable, Sequence
from enum import StrEnum
from typing import NamedTuple

from mailconnect.diagnosis.redact import HIDDEN, redact

__all__ = ["Direction", "Transcript", "TranscriptLine", "client_text", "reply_lines"]

_AUTH_CONTINUE = 334


class Direction(StrEnum):
    CLIENT = "C"
    SERVER = "S"
    NOTE = "*"  # something the client did or saw that is not a line on the wire


class TranscriptLine(NamedTuple):
    """One line (a tuple: a session records a few dozen of them, cheaply)."""

    direction: Direction
    text: str
    at_ms: float  # since the session started

    def __str__(self) -> str:
        return f"{self.direction.value}: {self.text}"

    def as_dict(self) -> dict[str, object]:
        return {"dir": self.direction.value, "text": self.text, "at_ms": round(self.at_ms, 1)}


def _decode(value: bytes) -> str:
    return value.decode("utf-8", "replace")


def client_text(args: Sequence[bytes], *, answers_challenge: bool) -> str:
    """How a client command appears in a transcript (pure).

    ``answers_challenge`` is true when the previous server reply was 334: the line is then a
    username, password or token and is hidden whole. For ``AUTH`` only the mechanism is kept.
    """
    if answers_challenge:
        return HIDDEN
    if args and args[0].upper() == b"AUTH":
        shown = [_decode(arg) for arg in args[:2]]
        return " ".join([*shown, HIDDEN] if len(args) > 2 else shown)
    # Decoded joined: the same text (a space cannot continue a UTF-8 sequence), in one call.
    return _decode(b" ".join(args))


def reply_lines(code: int, message: str) -> list[str]:
    """A reply as the server sent it: ``250-first``, ..., ``250 last``."""
    if "\n" not in message:  # (most replies)
        return [f"{code} {message}".rstrip()]
    parts = message.split("\n")
    lines = [f"{code}-{part}" for part in parts[:-1]]
    lines.append(f"{code} {parts[-1]}".rstrip())
    return lines


_PREFIXES = {direction: f"{direction.value}: " for direction in Direction}


class Transcript:
    """An append-only record of one session, with secrets removed as lines are added.

    Lines are kept as plain tuples and become :class:`TranscriptLine` only when asked for
    (:attr:`lines`): the outbox records eight lines per message and wants only their text.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets = tuple(s for s in secrets if s)
        # The forms a secret takes on the wire, as typed and in base64 (LOGIN sends that).
        self._forms = tuple(
            form for s in self._secrets for form in (s, base64.b64encode(s.encode()).decode())
        )
        self._lines: list[tuple[Direction, str, float]] = []
        self._started = time.perf_counter()
        self._challenge_open = False
        self._in_auth = False

    @property
    def lines(self) -> tuple[TranscriptLine, ...]:
        return tuple(TranscriptLine._make(line) for line in self._lines)

    def clear(self) -> None:
        """Forget the lines so far (a long session stores each message's part as it goes, and
        need not keep them all in memory); secrets and timing stay."""
        self._lines.clear()

    def _add(self, direction: Direction, text: str) -> None:
        self._lines.append((direction, text, (time.perf_counter() - self._started) * 1000))

    def client(self, *args: bytes) -> None:
        """Record a command (its arguments as they go on the wire)."""
        self._in_auth = self._challenge_open or (bool(args) and args[0].upper() == b"AUTH")
        self._add(Direction.CLIENT, client_text(args, answers_challenge=self._challenge_open))
        self._challenge_open = False

    def scrub(self, text: str) -> str:
        """``text`` without the session's secrets, as typed or in base64."""
        for form in self._forms:
            text = text.replace(form, HIDDEN)
        return text

    def server(self, code: int, message: str) -> str:
        """Record a reply; return its text with secrets hidden (what callers may show).

        Replies during AUTH, where a broken server may echo the payload, get the diagnosis
        package's full :func:`redact`; the others cannot contain more than the secrets
        themselves, which :meth:`scrub` removes. A 334 makes the next client line secret.
        """
        clean = redact(message, self._secrets) if self._in_auth else self.scrub(message)
        for line in reply_lines(code, clean):
            self._add(Direction.SERVER, line)
        self._challenge_open = code == _AUTH_CONTINUE
        return clean

    def redact(self, text: str) -> str:
        """``text`` with the session's secrets and credential-like patterns hidden (for words
        that leave the session: a note, an error's detail)."""
        return redact(text, self._secrets)

    def note(self, text: str) -> None:
        self._add(Direction.NOTE, self.redact(text))

    def message_sent(self, size: int) -> None:
        """Note the message itself (its size only: a transcript holds no body). Our own words,
        with nothing to redact: :meth:`note` runs every pattern, once per message."""
        self._add(Direction.NOTE, f"message of {size} bytes")

    def __str__(self) -> str:
        prefixes = _PREFIXES
        return "\n".join([prefixes[direction] + text for direction, text, _ in self._lines])
