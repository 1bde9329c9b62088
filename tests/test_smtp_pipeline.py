"""PIPELINING (RFC 2920): the reply parser, and SmtpSession.transaction against loopback servers.

The delivery tests (tests/test_outbox_delivery.py) run every misbehaving-server case with and
without PIPELINING; these look at the session itself: over STARTTLS, with replies that are not
SMTP, with more replies than commands, and with what must never be sent.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.support.sinks import raw_server
from tests.support.smtp_servers import PASSWORD, TOKEN, Script, StaticResolver, fake_server, pki

from mailconnect.diagnosis import Failure, Stage
from mailconnect.netguard import GuardPolicy, PinnedTarget, resolve_and_check
from mailconnect.settings import Security, parse_host
from mailconnect.smtp import (
    Pipelined,
    ReplyFormatError,
    SessionError,
    SmtpSession,
    TlsPolicy,
    connect_pinned,
    parse_replies,
)
from mailconnect.smtp._pipeline import MAX_REPLY_LINE

MESSAGE = b"Subject: hello\r\n\r\n.a line starting with a dot\r\nbye\r\n"

# --- the parser ---------------------------------------------------------------------------------


def _wire(replies: list[tuple[int, list[str]]]) -> bytes:
    out = b""
    for code, lines in replies:
        for index, line in enumerate(lines):
            separator = "-" if index < len(lines) - 1 else " "
            out += f"{code}{separator}{line}\r\n".encode()
    return out


def test_replies_one_after_another_and_a_partial_one_left() -> None:
    data = b"250 2.1.0 Ok\r\n550-5.1.1 no such user\r\n550 5.1.1 really\r\n354 go\r\n250-par"
    replies, consumed = parse_replies(data)
    assert replies == [(250, "2.1.0 Ok"), (550, "5.1.1 no such user\n5.1.1 really"), (354, "go")]
    assert data[consumed:] == b"250-par"


def test_a_bare_lf_and_a_code_alone_are_replies() -> None:
    assert parse_replies(b"250\n221 bye\n") == ([(250, ""), (221, "bye")], 12)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"hello there\r\n", "not an SMTP reply line"),
        (b"25 short\r\n", "not an SMTP reply line"),
        (b"099 low\r\n", "not an SMTP reply line"),
        (b"600 high\r\n", "not an SMTP reply line"),
        (b"250_odd separator\r\n", "not an SMTP reply line"),
        (b"250-first\r\n550 second\r\n", "changed its code"),
        (b"250 " + b"x" * MAX_REPLY_LINE + b"\r\n", "longer than"),
        (b"250 " + b"x" * MAX_REPLY_LINE, "longer than"),
        (b"250-x\r\n" * 201, "more than 200 lines"),
    ],
)
def test_what_is_not_smtp_is_refused(data: bytes, why: str) -> None:
    with pytest.raises(ReplyFormatError, match=why):
        parse_replies(data)


_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40).map(str.strip)
_reply = st.tuples(st.integers(200, 599), st.lists(_text, min_size=1, max_size=4))


@given(st.lists(_reply, max_size=6), st.integers(0, 400))
def test_any_replies_cut_anywhere_parse_back_in_order(
    replies: list[tuple[int, list[str]]], cut: int
) -> None:
    data = _wire(replies)
    whole, consumed = parse_replies(data)
    assert whole == [(code, "\n".join(lines)) for code, lines in replies]
    assert consumed == len(data)
    head, used = parse_replies(data[: min(cut, len(data))])
    assert head == whole[: len(head)]  # a prefix: only complete replies, none invented
    rest, _ = parse_replies(data[used:])
    assert head + rest == whole


@given(st.binary(max_size=300))
def test_any_bytes_give_replies_or_a_format_error(data: bytes) -> None:
    try:
        replies, consumed = parse_replies(data)
    except ReplyFormatError:
        return
    assert 0 <= consumed <= len(data)
    assert all(200 <= code <= 599 for code, _ in replies)


# --- the session --------------------------------------------------------------------------------


async def _target(port: int) -> PinnedTarget:
    return await resolve_and_check(
        parse_host("localhost"), port, GuardPolicy.off(), resolver=StaticResolver()
    )


async def _session(port: int, security: Security = Security.STARTTLS) -> SmtpSession:
    session = SmtpSession(
        await _target(port),
        security,
        tls=TlsPolicy(ca_file=pki().ca_file),
        secrets=[PASSWORD, TOKEN],
    )
    connected = await connect_pinned(session.target, 2)
    await session.open(connected.sock, timeout=2)
    await session.ehlo(timeout=2)
    if security is Security.STARTTLS:
        await session.starttls(timeout=2)
        await session.ehlo(timeout=2)
    return session


async def _send(session: SmtpSession, *rcpt: str) -> Pipelined:
    return await session.transaction(
        "jobs@acme.com", ["SIZE=60"], list(rcpt), MESSAGE, timeout=2, data_timeout=2
    )


async def test_one_write_for_the_envelope_over_starttls_then_the_session_goes_on() -> None:
    script = Script(replies={"RCPT": ["250 2.1.5 Ok", "550 5.1.1 no such user"]})
    async with fake_server(script) as fake:
        session = await _session(fake.port)
        assert session.pipelining
        replies = await _send(session, "ann@example.com", "gone@example.com")
        assert [r.code for r in replies.rcpt] == [250, 550]
        assert replies.data.code == 354
        assert replies.final.code == 250
        # aiosmtplib has the connection back: the next commands go through it.
        assert (await session.rset(timeout=2)).code == 250
        await session.quit(timeout=2)
    encrypted = bytes(fake.encrypted)
    envelope = (
        b"MAIL FROM:<jobs@acme.com> SIZE=60\r\nRCPT TO:<ann@example.com>\r\n"
        b"RCPT TO:<gone@example.com>\r\nDATA\r\n"
    )
    assert envelope in encrypted
    # one write: the RCPTs and DATA had arrived before the server answered MAIL
    assert fake.waiting["MAIL"] == envelope.partition(b"\r\n")[2]
    assert b"\r\n..a line starting with a dot\r\nbye\r\n.\r\n" in encrypted
    assert b"MAIL" not in bytes(fake.plaintext)  # nothing of the envelope before TLS
    lines = [str(line) for line in session.transcript.lines]
    assert "C: DATA" in lines
    assert any(line.startswith("S: 550 5.1.1") for line in lines)


async def test_no_recipient_accepted_but_354_ends_with_a_lone_dot() -> None:
    async with fake_server(Script(replies={"RCPT": "550 5.1.1 no such user"})) as fake:
        session = await _session(fake.port)
        replies = await _send(session, "gone@example.com")
        assert replies.data.code == 354
        await session.quit(timeout=2)
    assert b"Subject: hello" not in fake.received
    assert b"DATA\r\n.\r\nQUIT\r\n" in fake.received


@pytest.mark.parametrize(
    ("reply", "detail"),
    [
        ("hello, this is not smtp", "not SMTP"),
        ("250 2.0.0 Ok: queued\r\n250 2.0.0 and once more", "more replies than commands"),
    ],
)
async def test_an_answer_that_is_not_smtp_breaks_the_session(reply: str, detail: str) -> None:
    async with fake_server(Script(replies={"DATA": reply})) as fake:
        session = await _session(fake.port)
        with pytest.raises(SessionError) as caught:
            await _send(session, "ann@example.com")
    assert caught.value.stage is Stage.DATA
    assert caught.value.failure is Failure.DISCONNECTED
    assert detail in caught.value.detail
    assert not session.connected
    assert session.final_dot_may_have_left  # the message was handed over (TLS)


async def test_a_disconnect_before_the_envelope_replies_is_not_after_the_dot() -> None:
    async with fake_server(Script(reset_at="MAIL")) as fake:
        session = await _session(fake.port)
        with pytest.raises(SessionError) as caught:
            await _send(session, "ann@example.com")
    assert caught.value.stage is Stage.MAIL_FROM
    assert caught.value.reply is None
    assert not session.final_dot_may_have_left


async def test_what_must_not_be_sent_is_refused_unsent() -> None:
    async with fake_server(Script()) as fake:
        session = await _session(fake.port, Security.STARTTLS)
        with pytest.raises(SessionError, match="CR, LF or NUL"):
            await _send(session, "ann@example.com\r\nRCPT TO:<evil@example.com>")
        with pytest.raises(ValueError, match="bare CR or LF"):
            await session.transaction(
                "jobs@acme.com", [], ["ann@example.com"], b"a\nb", timeout=2, data_timeout=2
            )
        await session.quit(timeout=2)
    assert "MAIL" not in fake.verbs


async def test_nothing_of_the_envelope_before_tls() -> None:
    async with fake_server(Script()) as fake:
        session = SmtpSession(await _target(fake.port), Security.STARTTLS)
        connected = await connect_pinned(session.target, 2)
        await session.open(connected.sock, timeout=2)
        await session.ehlo(timeout=2)
        assert session.pipelining
        with pytest.raises(SessionError, match="not encrypted"):
            await _send(session, "ann@example.com")
        await session.quit(timeout=2)
    assert "MAIL" not in fake.verbs


# --- DATA on its own (a server without PIPELINING) ------------------------------------------------


async def test_data_on_its_own_records_the_354_and_sends_the_stuffed_message() -> None:
    async with fake_server(Script()) as fake:
        session = await _session(fake.port)
        await session.mail_from("jobs@acme.com", timeout=2)
        await session.rcpt_to("ann@example.com", timeout=2)
        assert (await session.data(MESSAGE, timeout=2)).code == 250
        assert (await session.rset(timeout=2)).code == 250  # aiosmtplib has the connection back
        await session.quit(timeout=2)
    lines = [str(line) for line in session.transcript.lines]
    at = lines.index("C: DATA")
    assert lines[at : at + 4] == [
        "C: DATA",
        "S: 354 End data with <CR><LF>.<CR><LF>",
        f"*: message of {len(MESSAGE)} bytes",
        "S: 250 2.0.0 Ok: queued",
    ]
    encrypted = bytes(fake.encrypted)
    stuffed = b"Subject: hello\r\n\r\n..a line starting with a dot\r\nbye\r\n.\r\n"
    assert b"DATA\r\n" + stuffed in encrypted
    assert fake.verbs.count("DATA") == 1


@pytest.mark.parametrize(
    ("reply", "still_connected"),
    [
        ("554 5.5.1 Error: no valid recipients", True),
        ("421 4.3.2 Shutting down", False),
        ("250 2.0.0 Ok", True),  # not a 354: the message was not sent, whatever the code says
    ],
)
async def test_data_refused_before_the_message_raises_with_the_reply(
    reply: str, still_connected: bool
) -> None:
    async with raw_server(lambda call: reply if call.verb == "DATA" else None) as server:
        session = await _session(server.port, Security.NONE)
        await session.mail_from("jobs@acme.com", timeout=2)
        await session.rcpt_to("ann@example.com", timeout=2)
        with pytest.raises(SessionError) as caught:
            await session.data(MESSAGE, timeout=2)
        assert session.connected is still_connected
        session.close()
    assert caught.value.stage is Stage.DATA
    assert caught.value.reply is not None
    assert caught.value.reply.code == int(reply[:3])
    assert not session.final_dot_may_have_left
    lines = [str(line) for line in session.transcript.lines]
    assert lines[-2:] == ["C: DATA", f"S: {reply}"]
    assert server.messages == []


async def test_data_on_its_own_after_an_answer_that_is_not_smtp_breaks_the_session() -> None:
    async with fake_server(Script(replies={"DATA": "hello, this is not smtp"})) as fake:
        session = await _session(fake.port)
        await session.mail_from("jobs@acme.com", timeout=2)
        await session.rcpt_to("ann@example.com", timeout=2)
        with pytest.raises(SessionError) as caught:
            await session.data(MESSAGE, timeout=2)
    assert caught.value.failure is Failure.DISCONNECTED
    assert "not SMTP" in caught.value.detail
    assert not session.connected
    assert session.final_dot_may_have_left  # the message was handed over (TLS)


async def test_a_step_refused_unsent_does_not_report_the_last_messages_final_dot() -> None:
    async with fake_server(Script()) as fake:
        session = await _session(fake.port)
        await _send(session, "ann@example.com")
        assert session.final_dot_may_have_left  # that message went (its reader says so)
        with pytest.raises(ValueError, match="bare CR or LF"):
            await session.data(b"a\nb", timeout=2)
        assert not session.final_dot_may_have_left  # this one did not
        assert (await session.data(MESSAGE, timeout=2)).code == 250
        assert session.final_dot_may_have_left
        with pytest.raises(ValueError, match="bare CR or LF"):
            await session.transaction(
                "jobs@acme.com", [], ["ann@example.com"], b"a\nb", timeout=2, data_timeout=2
            )
        assert not session.final_dot_may_have_left
        await session.quit(timeout=2)
    assert fake.verbs.count("DATA") == 2


@pytest.mark.parametrize("pipelined", [False, True], ids=["one-at-a-time", "pipelined"])
async def test_a_server_echoing_the_password_in_a_broken_answer_does_not_reach_the_error(
    pipelined: bool,
) -> None:
    # The detail of a broken answer quotes it; it reaches the attempt's record and the API.
    async with fake_server(Script(replies={"DATA": f"your password is {PASSWORD}"})) as fake:
        session = await _session(fake.port)
        if not pipelined:
            await session.mail_from("jobs@acme.com", timeout=2)
            await session.rcpt_to("ann@example.com", timeout=2)
        sending = (
            _send(session, "ann@example.com") if pipelined else session.data(MESSAGE, timeout=2)
        )
        with pytest.raises(SessionError) as caught:
            await sending
    assert "not SMTP" in caught.value.detail
    assert PASSWORD not in caught.value.detail
    assert PASSWORD not in str(session.transcript)
