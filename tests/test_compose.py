"""mailconnect.compose: rendering, validation, raw messages, sender and size checks."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime, timedelta, timezone
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import parsedate_to_datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailconnect.compose import (
    Attachment,
    Mailbox,
    MessageInput,
    Rendered,
    check_sender,
    check_size,
    dot_stuff_for_wire,
    has_bare_cr_or_lf,
    parse_raw,
    render,
)
from mailconnect.errors import ConfigurationError
from mailconnect.settings import parse_sender

DOMAIN = "acme.example"
INJECTION = "=?utf-8?q?x=0D=0ABcc:_evil@example.com?="
INJECTION_B64 = "=?utf-8?b?eA0KQmNjOiBldmlsQGV4YW1wbGUuY29t?="
NOW = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
BASE_NAMES = ["From", "To", "Subject", "Date", "Message-ID", "MIME-Version", "Content-Type"]


def header_names(data: bytes) -> list[str]:
    """Field names of the header block, read line by line (not with the email package)."""
    head = data.split(b"\r\n\r\n", 1)[0]
    names = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            continue
        name, colon, _ = line.partition(b":")
        assert colon, line
        names.append(name.decode("ascii"))
    return names


def parse(data: bytes) -> EmailMessage:
    message = BytesParser(policy=policy.default).parsebytes(data)
    assert isinstance(message, EmailMessage)
    return message


def content(part: object) -> str:
    """A text part's content with the wire's CRLF read as LF."""
    assert isinstance(part, EmailMessage)
    text = part.get_content()
    assert isinstance(text, str)
    return text.replace("\r\n", "\n")


def raw_header(data: bytes, name: str) -> str:
    """The unfolded value of the first header field ``name`` in the rendered bytes."""
    head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8").replace("\r\n ", " ")
    for line in head.split("\r\n"):
        field, _, value = line.partition(": ")
        if field == name:
            return value
    raise AssertionError(f"no {name} header")


def display_name(data: bytes, header: str, address: str) -> str:
    """The first mailbox's display name, decoded by RFC 2047 rules, not by the email package.

    Python 3.11's parser puts a space between two encoded words in a display name (even in its
    own output); RFC 2047 (section 6.2) says the white space between them is ignored.
    """
    phrase, found, _ = raw_header(data, header).partition(f" <{address}>")
    if not found:
        return ""
    if phrase.startswith('"'):
        return re.sub(r"\\(.)", r"\1", phrase[1:-1])
    words = phrase.split(" ")
    if all(word.startswith("=?utf-8?b?") for word in words):
        return b"".join(base64.b64decode(word[10:-2]) for word in words).decode("utf-8")
    assert "=?" not in phrase
    return phrase


def simple(**changes: object) -> MessageInput:
    fields: dict[str, object] = {
        "from_": "jobs@acme.example",
        "to": ["ann@example.com"],
        "subject": "Your application",
        "text": "Hello Ann\n",
    }
    fields.update(changes)
    return MessageInput(**fields)  # type: ignore[arg-type]


def rendered(**changes: object) -> Rendered:
    return render(simple(**changes), domain_for_id=DOMAIN, now=NOW)


# -- structure ------------------------------------------------------------------------------------


def test_text_message_headers_and_metadata() -> None:
    result = rendered(cc=["Bob@Example.COM"], bcc=["carol@example.com", "ann@EXAMPLE.com"])
    assert header_names(result.data) == [
        "From",
        "To",
        "Cc",
        "Subject",
        "Date",
        "Message-ID",
        "MIME-Version",
        "Content-Type",
        "Content-Transfer-Encoding",
    ]
    assert b"carol" not in result.data
    assert result.recipients == ("ann@example.com", "Bob@example.com", "carol@example.com")
    assert result.envelope_from == "jobs@acme.example"
    assert result.size == len(result.data)
    assert not result.smtputf8_needed
    assert not result.eightbit_needed
    assert result.data.endswith(b"\r\n")
    assert not has_bare_cr_or_lf(result.data)
    message = parse(result.data)
    assert message["Message-ID"] == result.message_id
    assert re.fullmatch(r"<[0-9a-f]{32}@acme\.example>", result.message_id)
    assert parsedate_to_datetime(message["Date"]) == NOW
    assert message["Content-Transfer-Encoding"] == "7bit"
    assert content(message) == "Hello Ann\n"


def test_message_ids_are_new_per_render_and_fixed_in_the_data() -> None:
    first, second = rendered(), rendered()
    assert first.message_id != second.message_id
    assert f"Message-ID: {first.message_id}\r\n".encode() in first.data


def test_message_id_domain_is_ascii_and_validated() -> None:
    result = render(simple(), domain_for_id="Bücher.example")
    assert result.message_id.endswith("@xn--bcher-kva.example>")
    assert render(simple(), domain_for_id="192.0.2.1").message_id.endswith("@[192.0.2.1]>")
    with pytest.raises(ConfigurationError) as error:
        render(simple(), domain_for_id="bad domain")
    assert error.value.field == "domain_for_id"


def test_date_uses_the_given_offset_and_needs_a_timezone() -> None:
    offset = timezone(timedelta(hours=2))
    in_utc = render(simple(), domain_for_id=DOMAIN, now=NOW.astimezone(UTC))
    result = render(simple(), domain_for_id=DOMAIN, now=NOW.astimezone(offset))
    # the same instant in two zones (equal datetimes): each keeps its own offset
    assert b"Date: Mon, 06 May 2024 07:08:09 +0000\r\n" in in_utc.data
    assert b"Date: Mon, 06 May 2024 09:08:09 +0200\r\n" in result.data
    with pytest.raises(ValueError, match="timezone"):
        render(simple(), domain_for_id=DOMAIN, now=datetime(2024, 1, 1))


def test_html_and_text_make_multipart_alternative() -> None:
    result = rendered(text="Plain ✓\n", html="<p>Rich ✓</p>")
    message = parse(result.data)
    assert message.get_content_type() == "multipart/alternative"
    plain, html = message.iter_parts()
    assert plain.get_content_type() == "text/plain"
    assert html.get_content_type() == "text/html"
    assert content(message.get_body(("html",))) == "<p>Rich ✓</p>\n"
    assert content(message.get_body(("plain",))) == "Plain ✓\n"
    assert header_names(result.data) == BASE_NAMES
    assert not result.eightbit_needed


def test_html_only_and_no_body() -> None:
    assert parse(rendered(text=None, html="<b>x</b>").data).get_content_type() == "text/html"
    empty = parse(rendered(text=None).data)
    assert empty.get_content_type() == "text/plain"
    assert content(empty) == "\n"


def test_body_encodings_by_content() -> None:
    ascii_part = parse(rendered(text="plain\n").data)
    assert ascii_part["Content-Transfer-Encoding"] == "7bit"
    accented = parse(rendered(text="Best regards from Köln, " * 20).data)
    assert accented["Content-Transfer-Encoding"] == "quoted-printable"
    cjk = parse(rendered(text="日本語のテキスト" * 40).data)
    assert cjk["Content-Transfer-Encoding"] == "base64"
    assert content(cjk) == "日本語のテキスト" * 40 + "\n"
    long_line = parse(rendered(text="x" * 1200).data)
    assert long_line["Content-Transfer-Encoding"] == "quoted-printable"
    assert content(long_line) == "x" * 1200 + "\n"
    nul = parse(rendered(text="a\0b").data)
    assert nul["Content-Transfer-Encoding"] == "quoted-printable"
    assert content(nul) == "a\0b\n"


def test_body_line_breaks_become_crlf() -> None:
    result = rendered(text="a\nb\r\nc\rd")
    assert result.data.endswith(b"\r\n\r\na\r\nb\r\nc\r\nd\r\n")
    assert not has_bare_cr_or_lf(result.data)


def test_attachments_are_base64_with_rfc2231_filenames() -> None:
    pdf = bytes(range(256)) * 10
    result = rendered(
        html="<p>hi</p>",
        attachments=[
            Attachment("Lebenslauf Müller.pdf", "application/PDF", pdf),
            Attachment("notes.txt", "text/plain", b"line\nline\r\n.\n"),
            Attachment("履歴書" * 30 + ".docx", "application/octet-stream", b""),
        ],
    )
    assert b"filename*=utf-8''Lebenslauf%20M%C3%BCller.pdf" in result.data
    assert b'filename="notes.txt"' in result.data
    assert b"filename*0*=utf-8''" in result.data
    message = parse(result.data)
    assert message.get_content_type() == "multipart/mixed"
    body, *files = message.iter_parts()
    assert body.get_content_type() == "multipart/alternative"
    assert [part.get_filename() for part in files] == [
        "Lebenslauf Müller.pdf",
        "notes.txt",
        "履歴書" * 30 + ".docx",
    ]
    assert [part.get_content_type() for part in files] == [
        "application/pdf",
        "text/plain",
        "application/octet-stream",
    ]
    assert all(part["Content-Transfer-Encoding"] == "base64" for part in files)
    assert all(part.get_content_disposition() == "attachment" for part in files)
    assert files[0].get_payload(decode=True) == pdf
    assert files[1].get_payload(decode=True) == b"line\nline\r\n.\n"
    assert files[2].get_payload(decode=True) == b""
    assert max(map(len, result.data.split(b"\r\n"))) <= 998
    assert header_names(result.data) == BASE_NAMES


@pytest.mark.parametrize(
    ("attachment", "field"),
    [
        (Attachment("", "application/pdf", b""), "attachments[0].filename"),
        (Attachment("a\r\nb.pdf", "application/pdf", b""), "attachments[0].filename"),
        (Attachment("x" * 300, "application/pdf", b""), "attachments[0].filename"),
        (Attachment("a.pdf", "application/pdf; name=x", b""), "attachments[0].content_type"),
        (Attachment("a.pdf", "pdf", b""), "attachments[0].content_type"),
        (Attachment("a.eml", "message/rfc822", b""), "attachments[0].content_type"),
        (Attachment("a.pdf", "application/pdf", "text"), "attachments[0].data"),  # type: ignore[arg-type]
    ],
)
def test_bad_attachments_are_refused(attachment: Attachment, field: str) -> None:
    with pytest.raises(ConfigurationError) as error:
        rendered(attachments=[attachment])
    assert error.value.field == field


# -- addresses and SMTPUTF8 -----------------------------------------------------------------------


def test_display_names_quoted_or_encoded() -> None:
    result = rendered(
        from_=Mailbox("jobs@acme.example", "Acme Jobs"),
        to=[
            Mailbox("ann@example.com", 'Ann "The Boss" O\\Neil, Jr.'),
            Mailbox("bob@example.com", "Bób Ünal"),
            Mailbox("eve@example.com", INJECTION),
            Mailbox("dan@example.com", "  "),
        ],
        reply_to=Mailbox("hr@acme.example", "HR"),
    )
    assert b"From: Acme Jobs <jobs@acme.example>\r\n" in result.data
    message = parse(result.data)
    assert [(a.display_name, a.addr_spec) for a in message["To"].addresses] == [
        ('Ann "The Boss" O\\Neil, Jr.', "ann@example.com"),
        ("Bób Ünal", "bob@example.com"),
        (INJECTION, "eve@example.com"),
        ("", "dan@example.com"),
    ]
    assert display_name(result.data, "To", "ann@example.com") == 'Ann "The Boss" O\\Neil, Jr.'

    assert message["Reply-To"].addresses[0].display_name == "HR"
    assert header_names(result.data) == [
        "From",
        "To",
        "Reply-To",
        *BASE_NAMES[2:],
        "Content-Transfer-Encoding",
    ]
    assert result.data.isascii()


def test_idn_domains_go_out_in_ascii_without_smtputf8() -> None:
    result = rendered(from_="jobs@bücher.example", to=["ann@MÜNCHEN.example"])
    assert result.envelope_from == "jobs@xn--bcher-kva.example"
    assert result.recipients == ("ann@xn--mnchen-3ya.example",)
    assert not result.smtputf8_needed
    assert result.data.isascii()


@pytest.mark.parametrize("where", ["from_", "to", "cc", "bcc", "reply_to"])
def test_non_ascii_local_part_needs_smtputf8(where: str) -> None:
    value: object = "jörg@bücher.example"
    if where in ("to", "cc", "bcc"):
        value = [value]
    result = rendered(**{where: value})
    assert result.smtputf8_needed
    if where != "bcc":
        assert result.eightbit_needed
        assert "jörg@bücher.example".encode() in result.data


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"from_": "not an address"}, "from"),
        ({"to": ["a@example.com", "b@example.com", "nope"]}, "to[2]"),
        ({"cc": ["x@example.com\r\nBcc: evil@example.com"]}, "cc[0]"),
        ({"bcc": ["ok@example.com", ""]}, "bcc[1]"),
        ({"reply_to": "a@b@c"}, "reply_to"),
        ({"to": [Mailbox("a@example.com", "Ann\r\nBcc: evil@example.com")]}, "to[0].name"),
        ({"from_": Mailbox("jobs@acme.example", "x" * 201)}, "from.name"),
        ({"from_": Mailbox("jobs@acme.example", "Jobs\0")}, "from.name"),
        ({"to": [42]}, "to[0]"),
        ({"to": [], "cc": [], "bcc": []}, "to"),
    ],
)
def test_address_errors_name_the_field(changes: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigurationError) as error:
        rendered(**changes)
    assert error.value.field == field


def test_a_single_string_is_one_recipient() -> None:
    assert rendered(to="ann@example.com").recipients == ("ann@example.com",)


def test_bcc_only_message_has_no_to_header() -> None:
    result = rendered(to=[], bcc=["hidden@example.com"])
    assert "To" not in header_names(result.data)
    assert result.recipients == ("hidden@example.com",)
    assert b"hidden" not in result.data


# -- header text and extra headers ----------------------------------------------------------------


@pytest.mark.parametrize("bad", ["a\rb", "a\nb", "a\r\nBcc: evil@example.com", "a\0b", "\x1b[31m"])
def test_subject_controls_refused(bad: str) -> None:
    with pytest.raises(ConfigurationError) as error:
        rendered(subject=bad)
    assert error.value.field == "subject"
    assert "control character" in error.value.problem


@pytest.mark.parametrize("bad", ["\x85", "\u2028", "\u2029", "\x7f"])
def test_unicode_line_separators_refused(bad: str) -> None:
    with pytest.raises(ConfigurationError, match="subject"):
        rendered(subject=f"a{bad}b")


def test_tab_is_allowed_in_header_text() -> None:
    assert parse(rendered(subject="a\tb").data)["Subject"] == "a\tb"


def test_long_ascii_subject_is_folded_not_encoded() -> None:
    subject = " ".join(f"word{i}" for i in range(60))
    result = rendered(subject=subject)
    assert b"=?" not in result.data
    head = result.data.split(b"\r\n\r\n")[0]
    assert max(map(len, head.split(b"\r\n"))) <= 78
    assert parse(result.data)["Subject"] == subject


def test_a_very_long_word_is_encoded() -> None:
    subject = "x" * 2000
    result = rendered(subject=subject)
    assert max(map(len, result.data.split(b"\r\n"))) <= 78
    assert parse(result.data)["Subject"] == subject


@pytest.mark.parametrize("injection", [INJECTION, INJECTION_B64, f"Hi {INJECTION} there"])
def test_encoded_words_in_input_stay_literal(injection: str) -> None:
    result = rendered(
        subject=injection,
        to=[Mailbox("ann@example.com", injection)],
        headers={"X-Note": injection},
    )
    expected = [*BASE_NAMES[:5], "X-Note", *BASE_NAMES[5:], "Content-Transfer-Encoding"]
    assert header_names(result.data) == expected
    message = parse(result.data)
    assert list(message.keys()) == expected
    assert message["Bcc"] is None
    assert message["Subject"] == injection
    assert message["X-Note"] == injection
    assert display_name(result.data, "To", "ann@example.com") == injection
    if len(injection) <= 45:
        assert message["To"].addresses[0].display_name == injection
    assert b"evil" not in result.data
    assert result.recipients == ("ann@example.com",)


def test_encoded_word_next_to_non_ascii_text() -> None:
    # The input that makes Python 3.11.7's EmailMessage write a Bcc line (CVE-2024-6923).
    result = rendered(subject=INJECTION + " ü")
    assert "Bcc" not in header_names(result.data)
    assert parse(result.data)["Subject"] == INJECTION + " ü"


def test_extra_headers_are_kept_in_order() -> None:
    result = rendered(
        headers={"X-Campaign": "spring 2024", "List-Unsubscribe": "<https://acme.example/u/123>"}
    )
    names = header_names(result.data)
    assert names[5:7] == ["X-Campaign", "List-Unsubscribe"]
    message = parse(result.data)
    assert message["List-Unsubscribe"] == "<https://acme.example/u/123>"


@pytest.mark.parametrize(
    "name",
    [
        "From",
        "to",
        "CC",
        "Bcc",
        "Reply-To",
        "Sender",
        "Subject",
        "Message-ID",
        "Date",
        "MIME-Version",
        "Content-Type",
        "content-transfer-encoding",
        "Received",
        "Return-Path",
        "Resent-From",
        "DKIM-Signature",
        "Authentication-Results",
    ],
)
def test_structural_headers_cannot_be_overridden(name: str) -> None:
    with pytest.raises(ConfigurationError) as error:
        rendered(headers={name: "x"})
    assert error.value.field == f'headers["{name}"]'
    assert "cannot be given as an extra header" in error.value.problem


@pytest.mark.parametrize(
    ("headers", "field"),
    [
        ({"X-Foo": "a\r\nBcc: evil@example.com"}, 'headers["X-Foo"]'),
        ({"X-Foo": "a\0"}, 'headers["X-Foo"]'),
        ({"X-Foo\r\nBcc": "x"}, 'headers["X-Foo\\r\\nBcc"]'),
        ({"X Foo": "x"}, 'headers["X Foo"]'),
        ({"X-Foo:": "x"}, 'headers["X-Foo:"]'),
        ({"": "x"}, 'headers[""]'),
        ({"X-Grüße": "x"}, 'headers["X-Grüße"]'),
        ({"X-" + "a" * 80: "x"}, f'headers["X-{"a" * 80}"]'),
        ({"X-Foo": "1", "x-foo": "2"}, 'headers["x-foo"]'),
        ({"X-Foo": 1}, 'headers["X-Foo"]'),
    ],
)
def test_bad_extra_headers(headers: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigurationError) as error:
        rendered(headers=headers)
    assert error.value.field == field


def test_error_messages_say_how_to_fix() -> None:
    with pytest.raises(ConfigurationError) as error:
        rendered(headers={"Subject": "x"})
    assert error.value.fix == "set subject in the message instead"


# -- properties -----------------------------------------------------------------------------------

HEADER_ALPHABET = st.characters(
    codec="utf-8", exclude_categories=("Cc", "Cs"), exclude_characters="\u2028\u2029"
) | st.just("\t")
NASTY = st.sampled_from(
    [INJECTION, INJECTION_B64, "=?", "?=", '"', "\\", " ", "\t", ",", "<", ">", ":", "Bcc: x@y.z"]
)
HEADER_TEXT = st.lists(st.text(HEADER_ALPHABET, max_size=30) | NASTY, max_size=8).map("".join)
BODY_TEXT = st.text(st.characters(codec="utf-8"), max_size=400) | st.lists(
    st.sampled_from(["\n.\n", "\r.\r", "\n.\r\n", ".", "x", "\r\n", "\r", "\n", "..", " ", "é"])
).map("".join)
HEADER_NAME = st.from_regex(r"X-[A-Za-z0-9-]{1,20}", fullmatch=True)


def _expected_body(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text if text.endswith("\n") else text + "\n"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    subject=HEADER_TEXT,
    name=HEADER_TEXT.map(lambda s: s[:200]),  # longer names are refused (tested apart)
    extra=st.dictionaries(HEADER_NAME, HEADER_TEXT, max_size=3),
    text=BODY_TEXT,
    html=st.none() | BODY_TEXT,
)
def test_render_properties(
    subject: str, name: str, extra: dict[str, str], text: str, html: str | None
) -> None:
    if len({key.lower() for key in extra}) != len(extra):
        return  # names differing only in case are refused; tested elsewhere
    result = rendered(
        subject=subject,
        to=[Mailbox("ann@example.com", name), "bob@example.com"],
        bcc=["hidden@example.com"],
        text=text,
        html=html,
        headers=extra,
    )
    data = result.data
    assert not has_bare_cr_or_lf(data)
    assert data.endswith(b"\r\n")
    assert max(map(len, data.split(b"\r\n"))) <= 998
    expected = [*BASE_NAMES[:5], *extra, *BASE_NAMES[5:]]
    if html is None:
        expected.append("Content-Transfer-Encoding")
    assert header_names(data) == expected
    message = parse(data)
    assert message["Subject"] == subject.strip(" \t")
    stripped = name.strip()
    assert display_name(data, "To", "ann@example.com") == stripped
    if len(stripped.encode()) <= 40 and re.fullmatch(r"(\S+( \S+)*)?", stripped):
        # one encoded word at most, single spaces (Python turns a tab or two spaces into one)
        assert message["To"].addresses[0].display_name == stripped
    for key, value in extra.items():
        assert message[key] == value.strip(" \t")
    assert message["Bcc"] is None
    plain = message.get_body(("plain",))
    if plain is not None:
        assert content(plain) == _expected_body(text)
    if html is not None:
        part = message.get_body(("html",))
        assert part is not None
        assert content(part) == _expected_body(html)
    wire = dot_stuff_for_wire(data)
    assert (b"\r\n" + wire).find(b"\r\n.\r\n") == len(wire) - 3


PRINTABLE = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Zl", "Zp")), max_size=60
).filter(lambda value: "=?" not in value)


# Display names Python's parser reads back reliably (it collapses runs of spaces, and splits
# names long enough to need two encoded words): ASCII words, or a few real non-ASCII names.
DISPLAY_NAMES = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40).map(
    lambda value: " ".join(value.split())
).filter(lambda value: "=?" not in value) | st.sampled_from(
    ["Jörg Müller", "José Ñúñez", "王小明", "Ægir Þórsson", "Zoë O'Brien-Łukasz", "Åsa, HR"]
)


@settings(max_examples=100, deadline=None)
@given(
    subject=PRINTABLE,
    name=DISPLAY_NAMES,
    text=st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Co")), max_size=500),
    html=st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Co")), max_size=500),
)
def test_lean_renderer_matches_email_message(subject: str, name: str, text: str, html: str) -> None:
    """The hand-written MIME reads back exactly like what EmailMessage writes."""
    ours = parse(
        rendered(
            from_=Mailbox("jobs@acme.example", name),
            to=["ann@example.com", "bob@example.com"],
            subject=subject,
            text=text,
            html=html,
        ).data
    )
    reference = EmailMessage()
    reference["From"] = Address(display_name=name.strip(), addr_spec="jobs@acme.example")
    reference["To"] = "ann@example.com, bob@example.com"
    reference["Subject"] = subject.strip(" \t")
    reference.set_content(text)
    reference.add_alternative(html, subtype="html")
    theirs = parse(reference.as_bytes(policy=policy.SMTP))
    for header in ("From", "To", "Subject"):
        assert str(ours[header]) == str(theirs[header]), header
    assert ours.get_content_type() == theirs.get_content_type() == "multipart/alternative"
    for kind in ("plain", "html"):
        mine, reference_part = ours.get_body((kind,)), theirs.get_body((kind,))
        assert mine is not None
        assert reference_part is not None
        assert mine.get_content_type() == reference_part.get_content_type()
        assert mine.get_content_charset() == reference_part.get_content_charset() == "utf-8"
        assert content(mine) == content(reference_part)


# -- raw messages ---------------------------------------------------------------------------------

RAW = (
    b"From: Acme Jobs <jobs@acme.example>\n"
    b"To: Ann <ann@example.com>, bob@example.com\n"
    b"Cc: carol@example.com\n"
    b"Bcc: hidden@example.com,\n"
    b" also-hidden@example.com\n"
    b"Subject: Hello\n"
    b"\n"
    b"Body line\n"
    b".leading dot\n"
)


def test_raw_lf_becomes_crlf_bcc_removed_message_id_added() -> None:
    result = parse_raw(RAW, domain_for_id=DOMAIN, now=NOW)
    assert not has_bare_cr_or_lf(result.data)
    assert header_names(result.data) == ["Message-ID", "Date", "From", "To", "Cc", "Subject"]
    assert b"hidden" not in result.data
    assert result.recipients == (
        "ann@example.com",
        "bob@example.com",
        "carol@example.com",
        "hidden@example.com",
        "also-hidden@example.com",
    )
    assert result.envelope_from == "jobs@acme.example"
    assert result.data.endswith(b"\r\n\r\nBody line\r\n.leading dot\r\n")
    assert re.fullmatch(r"<[0-9a-f]{32}@acme\.example>", result.message_id)
    assert parse(result.data)["Message-ID"] == result.message_id
    assert result.size == len(result.data)
    assert not result.smtputf8_needed
    assert not result.eightbit_needed


def test_raw_keeps_its_message_id_and_date() -> None:
    raw = RAW.replace(b"Subject:", b"Message-ID: <abc@x.example>\nDate: x\nSubject:")
    result = parse_raw(raw.replace(b"\n", b"\r\n"), domain_for_id=DOMAIN)
    assert result.message_id == "<abc@x.example>"
    assert header_names(result.data)[0] == "From"


def test_raw_recipients_given_separately() -> None:
    raw = b"From: jobs@acme.example\r\nSubject: x\r\n\r\nhi\r\n"
    result = parse_raw(raw, domain_for_id=DOMAIN, recipients=["Z@Example.com", "z@example.com"])
    assert result.recipients == ("Z@example.com",)
    with pytest.raises(ConfigurationError) as error:
        parse_raw(raw, domain_for_id=DOMAIN)
    assert error.value.field == "recipients"
    with pytest.raises(ConfigurationError) as error:
        parse_raw(raw, domain_for_id=DOMAIN, recipients=["ok@example.com", "bad"])
    assert error.value.field == "recipients[1]"


def test_raw_without_body_and_header_only() -> None:
    result = parse_raw(b"From: a@example.com\nTo: b@example.com", domain_for_id=DOMAIN)
    assert result.data.endswith(b"To: b@example.com\r\n")


def test_raw_utf8_headers_and_8bit_body() -> None:
    raw = "From: jörg@bücher.example\nTo: ann@example.com\nSubject: Grüße\n\nGrüße\n".encode()
    result = parse_raw(raw, domain_for_id=DOMAIN)
    assert result.smtputf8_needed
    assert result.eightbit_needed
    body_only = parse_raw(
        "From: a@example.com\nTo: b@example.com\n\nGrüße\n".encode(), domain_for_id=DOMAIN
    )
    assert not body_only.smtputf8_needed
    assert body_only.eightbit_needed


FT = b"From: a@example.com\r\nTo: b@example.com\r\n"  # a minimal valid header


def _header(name: str) -> str:
    return f'raw.headers["{name}"]'


@pytest.mark.parametrize(
    ("raw", "field", "words"),
    [
        (b"From: a@example.com\rTo: b@example.com\r\n\r\nx", "raw", "bare CR"),
        (FT + b"\r\nx\ry\r\n", "raw", "bare CR"),
        (FT + b"\r\nx\0", "raw", "NUL"),
        (b"\r\n" + FT, "raw", "empty line"),
        (b" " + FT, "raw", "continuation"),
        (b"From a@example.com Mon Jan 1\r\n" + FT, "raw", "Name: value"),
        (b"From: a@example.com\r\nTo : b@example.com\r\n", "raw", "Name: value"),
        (b"To: b@example.com\r\n\r\nx", "raw.headers", "no From"),
        (b"From: a@example.com, c@example.com\r\nTo: b@example.com\r\n", _header("From"), "2"),
        (b"From: a@example.com\r\n" + FT, _header("From"), "more than once"),
        (FT + b"To: c@example.com\r\n", _header("To"), "more than once"),
        (FT + b"X: a\x1bb\r\n", _header("X"), "control"),
        (b"From: a@example.com\r\nTo: b@example.com, junk junk\r\n", _header("To"), "malformed"),
        (FT + b"Subject: \xff\r\n", _header("Subject"), "UTF-8"),
        (FT + b"Message-ID: nope\r\n", _header("Message-ID"), "<id@domain>"),
        (FT + b"\r\n" + b"x" * 999, "raw", "998"),
        (FT + f"Subject: {INJECTION}\r\n".encode(), _header("Subject"), "injection"),
        (FT + f"X-A: {INJECTION_B64}\r\n".encode(), _header("X-A"), "injection"),
        (f"From: {INJECTION} <a@example.com>\r\n".encode() + FT[21:], _header("From"), "injection"),
    ],
)
def test_raw_refused(raw: bytes, field: str, words: str) -> None:
    with pytest.raises(ConfigurationError) as error:
        parse_raw(raw, domain_for_id=DOMAIN)
    assert error.value.field == field
    assert words in error.value.problem


def test_raw_size_limit() -> None:
    raw = b"From: a@example.com\nTo: b@example.com\n\n" + b"x\n" * 100
    assert parse_raw(raw, domain_for_id=DOMAIN, max_size=500).size <= 500
    with pytest.raises(ConfigurationError, match="limit of 200"):
        parse_raw(raw, domain_for_id=DOMAIN, max_size=200)
    # the limit also holds after LF -> CRLF (the message grows by one octet per line)
    with pytest.raises(ConfigurationError):
        parse_raw(raw, domain_for_id=DOMAIN, max_size=len(raw) + 10)


def test_raw_then_wire() -> None:
    result = parse_raw(RAW, domain_for_id=DOMAIN)
    assert b"\r\n..leading dot\r\n.\r\n" in dot_stuff_for_wire(result.data)


# -- sender and size ------------------------------------------------------------------------------


def test_check_sender() -> None:
    check_sender("jobs@acme.example", ["jobs@acme.example"])
    check_sender("Careers@ACME.example", ["jobs@acme.example", "careers@acme.example"])
    check_sender("jobs@bücher.example", ["jobs@xn--bcher-kva.example"])
    with pytest.raises(ConfigurationError) as error:
        check_sender("ceo@acme.example", ["jobs@acme.example", "hr@acme.example"])
    assert error.value.field == "from"
    assert "jobs@acme.example, hr@acme.example" in error.value.problem
    assert "send from jobs@acme.example" in error.value.fix
    with pytest.raises(ConfigurationError, match="no sender address"):
        check_sender("jobs@acme.example", [])
    with pytest.raises(ConfigurationError) as error:
        check_sender("not-an-address", ["jobs@acme.example"])
    assert error.value.field == "from"


def test_check_sender_lists_at_most_three() -> None:
    allowed = [f"a{i}@acme.example" for i in range(5)]
    with pytest.raises(ConfigurationError, match="and 2 more"):
        check_sender("x@acme.example", allowed)


def test_check_sender_with_rendered_message() -> None:
    result = rendered(from_=Mailbox("Jobs@Acme.Example", "Jobs"))
    check_sender(result.envelope_from, ["jobs@acme.example"])


def test_check_size() -> None:
    check_size(1000, None, None)
    check_size(1000, 0, 0)
    check_size(1000, 1000, 5000)
    with pytest.raises(ConfigurationError) as error:
        check_size(26_000_000, 25_000_000, 50_000_000)
    assert error.value.field == "size"
    assert "server's SIZE limit of 25.0 MB" in error.value.problem
    with pytest.raises(ConfigurationError, match="provider's limit"):
        check_size(2_000, None, 1_500)
    with pytest.raises(ValueError, match="negative"):
        check_size(-1, None, None)


def test_check_sender_accepts_one_string() -> None:
    check_sender("jobs@acme.example", "jobs@acme.example")


def test_overlong_content_type_refused() -> None:
    with pytest.raises(ConfigurationError) as error:
        rendered(attachments=[Attachment("a.bin", "application/" + "x" * 2000, b"")])
    assert error.value.field == "attachments[0].content_type"


# -- raw messages from anyone: only ConfigurationError ---------------------------------------------

_RAW_PIECES = st.sampled_from(
    [
        b"From: a@example.com\r\n",
        b"To: b@example.com\r\n",
        b"Bcc: c@example.com\r\n",
        b"Subject: =?utf-8?b?4oCo?=\r\n",  # an encoded U+2028
        b"Subject: =?x-unknown?q?=85?=\r\n",
        b"Message-ID: <a@b>\r\n",
        b"Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n",
        b" folded\r\n",
        b"\r\n",
        b"\n",
        b"\r",
        b"\x00",
        b"\xff\xfe",
        "Subject: Grüße\r\n".encode(),
        b"X-" + b"9" * 5000 + b": x\r\n",
        b"body .\r\n.\r\n",
    ]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=2000), st.lists(_RAW_PIECES, max_size=12).map(b"".join)))
def test_parse_raw_takes_any_bytes(raw: bytes) -> None:
    try:
        result = parse_raw(raw, domain_for_id=DOMAIN, now=NOW)
    except ConfigurationError as exc:
        assert exc.field.startswith(("raw", "recipients")), exc.field
        assert exc.problem
        assert exc.fix
        return
    assert not has_bare_cr_or_lf(result.data)
    assert result.size == len(result.data)
    assert result.recipients
    assert b"\r\nBcc:" not in b"\r\n" + result.data.split(b"\r\n\r\n", 1)[0]


@pytest.mark.parametrize("char", ["\x85", "\x9b", "\u2028", "\u2029"])
def test_settings_and_compose_refuse_the_same_display_names(char: str) -> None:
    # One control-character policy: what settings let through, compose never refuses later.
    with pytest.raises(ConfigurationError) as error:
        parse_sender("jobs@acme.example", f"Acme{char}Jobs")
    assert error.value.field == "sender.display_name"
    with pytest.raises(ConfigurationError):
        rendered(from_=Mailbox("jobs@acme.example", f"Acme{char}Jobs"))


def test_an_encoded_word_that_decodes_to_a_c1_control_is_refused() -> None:
    with pytest.raises(ConfigurationError) as error:
        parse_raw(FT + b"Subject: =?iso-8859-1?q?a=9Bb?=\r\n", domain_for_id=DOMAIN)
    assert "control character" in error.value.problem
