"""What reaches the wire: dot-stuffing, CRLF only, one terminator, no injected header.

The last tests send rendered messages with aiosmtplib to a real aiosmtpd server on 127.0.0.1 and
look at the raw bytes the server received.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from email import policy
from email.parser import BytesParser
from typing import Any

import aiosmtplib
import pytest
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings
from hypothesis import given, settings
from hypothesis import strategies as st

from mailconnect.compose import (
    Mailbox,
    MessageInput,
    Rendered,
    dot_stuff_for_wire,
    has_bare_cr_or_lf,
    parse_raw,
    render,
)
from mailconnect.netguard import GuardPolicy, resolve_and_check
from mailconnect.settings import Security, parse_host
from mailconnect.smtp import SmtpSession, connect_pinned

INJECTION = "=?utf-8?q?x=0D=0ABcc:_evil@example.com?="
TERMINATOR = b"\r\n.\r\n"
EXPECTED_NAMES = [
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
]

# The bodies the issue names, plus a few neighbours.
ISSUE_BODIES = {
    "lf-dot-lf": "before\n.\nafter",
    "cr-dot-cr": "before\r.\rafter",
    "lf-dot-crlf": "before\n.\r\nafter",
    "leading-dot": ".starts with a dot\n..two dots\n.",
    "only-dot": ".",
    "crlf-dot-crlf-end": "text\r\n.\r\n",
    "smuggling": "a\r\n.\r\nMAIL FROM:<evil@example.com>\r\n\n.\n",
}


def unstuff(payload: bytes) -> bytes:
    """What a receiver makes of a DATA payload (RFC 5321, 4.5.2), written independently."""
    assert payload.endswith(b".\r\n")
    lines = payload[:-3].split(b"\r\n")
    assert lines[-1] == b""
    return b"".join((line[1:] if line.startswith(b".") else line) + b"\r\n" for line in lines[:-1])


def terminator_positions(stream: bytes) -> list[int]:
    """Where ``\\r\\n.\\r\\n`` occurs in a stream that follows ``DATA\\r\\n``."""
    text = b"\r\n" + stream
    positions, start = [], 0
    while (found := text.find(TERMINATOR, start)) != -1:
        positions.append(found)
        start = found + 1
    return positions


def header_names(data: bytes) -> list[str]:
    head = data.split(b"\r\n\r\n", 1)[0]
    return [
        line.partition(b":")[0].decode("ascii")
        for line in head.split(b"\r\n")
        if line[:1] not in (b" ", b"\t")
    ]


def message(text: str, subject: str = "Hello") -> Rendered:
    return render(
        MessageInput(
            from_="jobs@acme.example",
            to=[Mailbox("ann@example.com", INJECTION)],
            bcc=["hidden@example.com"],
            subject=subject,
            text=text,
            headers={"X-Note": INJECTION},
        ),
        domain_for_id="acme.example",
    )


# -- dot_stuff_for_wire ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "payload"),
    [
        (b"", b"\r\n.\r\n"),
        (b"a\r\n", b"a\r\n.\r\n"),
        (b"a", b"a\r\n.\r\n"),
        (b".\r\n", b"..\r\n.\r\n"),
        (b".a\r\n.\r\nb\r\n..\r\n", b"..a\r\n..\r\nb\r\n...\r\n.\r\n"),
        (b"a.b\r\n .\r\n", b"a.b\r\n .\r\n.\r\n"),
    ],
)
def test_dot_stuffing_cases(data: bytes, payload: bytes) -> None:
    assert dot_stuff_for_wire(data) == payload


@pytest.mark.parametrize("data", [b"a\nb\r\n", b"a\rb\r\n", b"a\r\r\n", b"\n", b"\r", b"a\r\n\n"])
def test_bare_cr_or_lf_is_a_bug_and_raises(data: bytes) -> None:
    assert has_bare_cr_or_lf(data)
    with pytest.raises(ValueError, match="bare CR or LF"):
        dot_stuff_for_wire(data)


LINE = st.binary(max_size=40).map(lambda raw: raw.replace(b"\r", b"").replace(b"\n", b""))
CRLF_DATA = st.builds(
    lambda lines, dots, end: (
        b"\r\n".join((b"." * count + line) for line, count in zip(lines, dots, strict=False)) + end
    ),
    st.lists(LINE | st.sampled_from([b".", b"..", b"", b". "]), max_size=30),
    st.lists(st.integers(0, 2), min_size=30, max_size=30),
    st.sampled_from([b"", b"\r\n"]),
)


@settings(max_examples=300, deadline=None)
@given(CRLF_DATA)
def test_dot_stuffing_properties(data: bytes) -> None:
    payload = dot_stuff_for_wire(data)
    assert not has_bare_cr_or_lf(payload)
    assert terminator_positions(payload) == [len(payload) - 3]
    expected = data if data.endswith(b"\r\n") or not data else data + b"\r\n"
    assert unstuff(payload) == (expected or b"\r\n")


@settings(max_examples=300, deadline=None)
@given(CRLF_DATA)
def test_same_bytes_as_aiosmtplib_writes(data: bytes) -> None:
    # aiosmtplib 5.1.3, SMTPProtocol.execute_data_command: normalize line endings, stuff, ".\r\n"
    theirs = PERIOD_REGEX.sub(b"..", normalize_message_line_endings(data)) + b".\r\n"
    assert dot_stuff_for_wire(data) == theirs


# -- rendered messages ----------------------------------------------------------------------------


@pytest.mark.parametrize("body", ISSUE_BODIES.values(), ids=ISSUE_BODIES.keys())
@pytest.mark.parametrize("subject", ["Hello", INJECTION, f"Grüße {INJECTION}"])
def test_issue_cases_on_the_wire(body: str, subject: str) -> None:
    rendered = message(body, subject)
    payload = dot_stuff_for_wire(rendered.data)
    assert not has_bare_cr_or_lf(payload)
    assert terminator_positions(payload) == [len(payload) - 3]
    assert unstuff(payload) == rendered.data
    assert header_names(rendered.data) == [*EXPECTED_NAMES[:5], "X-Note", *EXPECTED_NAMES[5:]]
    parsed = BytesParser(policy=policy.default).parsebytes(unstuff(payload))
    assert parsed["Bcc"] is None
    assert parsed["Subject"] == subject
    assert b"evil" not in rendered.data.split(b"\r\n\r\n", 1)[0]
    lines = parsed.get_content().split("\r\n")
    expected = body.replace("\r\n", "\n").replace("\r", "\n").rstrip("\n").split("\n")
    assert lines[: len(expected)] == expected


def test_raw_message_on_the_wire() -> None:
    raw = b"From: jobs@acme.example\nTo: ann@example.com\nSubject: x\n\n.\n..\nend"
    payload = dot_stuff_for_wire(parse_raw(raw, domain_for_id="acme.example").data)
    assert payload.endswith(b"\r\n\r\n..\r\n...\r\nend\r\n.\r\n")
    assert terminator_positions(payload) == [len(payload) - 3]


# -- a real server --------------------------------------------------------------------------------


@dataclass
class Capture:
    """What one loopback aiosmtpd server received: raw bytes, and its parsed envelopes."""

    port: int = 0
    raw: bytearray = field(default_factory=bytearray)
    envelopes: list[Any] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.envelopes.append(envelope)
        return "250 2.0.0 Ok: queued"

    def data_stream(self) -> bytes:
        """The bytes the client sent after ``DATA\\r\\n`` (the payload and what followed)."""
        start = self.raw.index(b"DATA\r\n") + len(b"DATA\r\n")
        return bytes(self.raw[start:])


def recording_server(capture: Capture) -> SMTPServer:
    class Recording(SMTPServer):
        def data_received(self, data: bytes) -> None:
            capture.raw.extend(data)
            super().data_received(data)

    return Recording(capture, hostname="mx.test", enable_SMTPUTF8=True)


@pytest.fixture
async def smtp_capture() -> AsyncIterator[Capture]:
    capture = Capture()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: recording_server(capture), "127.0.0.1", 0)
    capture.port = server.sockets[0].getsockname()[1]
    try:
        yield capture
    finally:
        server.close()
        await server.wait_closed()


async def aiosmtplib_send(capture: Capture, data: bytes, rendered: Rendered) -> None:
    client = aiosmtplib.SMTP(hostname="127.0.0.1", port=capture.port, timeout=10, use_tls=False)
    async with client:
        await client.sendmail(rendered.envelope_from, list(rendered.recipients), data)


async def send(
    capture: Capture, rendered: Rendered, *, pipelined: bool, options: Sequence[str] = ()
) -> None:
    """Send ``rendered`` as the worker does: through an SmtpSession, DATA on its own or the
    whole transaction pipelined."""
    target = await resolve_and_check(parse_host("127.0.0.1"), capture.port, GuardPolicy.off())
    session = SmtpSession(target, Security.NONE)
    await session.open((await connect_pinned(target, 5)).sock, timeout=5)
    await session.ehlo(timeout=5)
    recipients = list(rendered.recipients)
    if pipelined:
        replies = await session.transaction(
            rendered.envelope_from, options, recipients, rendered.data, timeout=5, data_timeout=5
        )
        assert replies.final is not None
        assert replies.final.code == 250
    else:
        await session.mail_from(rendered.envelope_from, options, timeout=5)
        for address in recipients:
            await session.rcpt_to(address, timeout=5)
        assert (await session.data(rendered.data, timeout=5)).code == 250
    await session.quit(timeout=5)


@pytest.mark.parametrize("pipelined", [False, True], ids=["one-at-a-time", "pipelined"])
@pytest.mark.parametrize("body", ISSUE_BODIES.values(), ids=ISSUE_BODIES.keys())
async def test_real_server_receives_exactly_the_stuffed_data(
    smtp_capture: Capture, body: str, pipelined: bool
) -> None:
    rendered = message(body, subject=INJECTION)
    await send(smtp_capture, rendered, pipelined=pipelined)

    stream = smtp_capture.data_stream()
    payload = dot_stuff_for_wire(rendered.data)
    assert stream.startswith(payload)
    assert stream[len(payload) :] in (b"", b"QUIT\r\n")
    assert not has_bare_cr_or_lf(bytes(smtp_capture.raw))
    assert terminator_positions(stream) == [len(payload) - 3]

    (envelope,) = smtp_capture.envelopes
    assert envelope.content == rendered.data
    assert envelope.mail_from == "jobs@acme.example"
    assert envelope.rcpt_tos == ["ann@example.com", "hidden@example.com"]
    assert header_names(envelope.content) == [*EXPECTED_NAMES[:5], "X-Note", *EXPECTED_NAMES[5:]]


async def test_real_server_smtputf8(smtp_capture: Capture) -> None:
    rendered = render(
        MessageInput(
            from_="jobs@acme.example",
            to=["jörg@bücher.example"],
            subject="Grüße",
            text="Grüße\n.\n",
        ),
        domain_for_id="acme.example",
    )
    assert rendered.smtputf8_needed
    await send(smtp_capture, rendered, pipelined=False, options=["SMTPUTF8", "BODY=8BITMIME"])
    (envelope,) = smtp_capture.envelopes
    assert envelope.rcpt_tos == ["jörg@bücher.example"]
    assert envelope.content == rendered.data
    assert smtp_capture.data_stream().startswith(dot_stuff_for_wire(rendered.data))


async def test_stuffing_before_aiosmtplib_would_stuff_twice(smtp_capture: Capture) -> None:
    # Why mailconnect hands aiosmtplib the rendered data, not dot_stuff_for_wire's output.
    rendered = message(".hidden line\n")
    await aiosmtplib_send(smtp_capture, dot_stuff_for_wire(rendered.data), rendered)
    (envelope,) = smtp_capture.envelopes
    assert envelope.content != rendered.data
    assert b"\r\n..hidden line\r\n" in envelope.content
