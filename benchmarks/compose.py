"""How fast messages render at enqueue: mailconnect.compose.render against EmailMessage.

    .venv/bin/python benchmarks/compose.py [--count N]

Prints one table. Every case renders a text+html message of about 2 KB (1 KB of text, 1 KB of
HTML); the baseline builds the same message with email.message.EmailMessage and serializes it with
as_bytes(policy=email.policy.SMTP), in the same run. Each figure is the best of three rounds.
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Callable
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage

from mailconnect.compose import Mailbox, MessageInput, render

DOMAIN = "acme.example"
SUBJECT = "Your application for the position of Senior Engineer"
PARAGRAPH = (
    "Thank you for applying. We have received your documents and will get back to you "
    "within the next two weeks. "
)
TEXT = (PARAGRAPH * 9)[:1000]
HTML = ("<p>" + PARAGRAPH * 8 + "</p>\n")[:1000]
GERMAN = (
    "Vielen Dank für Ihre Bewerbung. Wir haben Ihre Unterlagen erhalten und melden uns "
    "innerhalb von zwei Wochen bei Ihnen. Grüße aus Köln! "
)
TEXT_DE = (GERMAN * 8)[:1000]
HTML_DE = ("<p>" + GERMAN * 7 + "</p>\n")[:1000]
_counter = itertools.count()


def _render(text: str, html: str, unique: bool) -> Callable[[], bytes]:
    def run() -> bytes:
        recipient = f"applicant{next(_counter)}@example.com" if unique else "ann@example.com"
        message = MessageInput(
            from_=Mailbox("jobs@acme.example", "Acme Jobs"),
            to=[Mailbox(recipient, "Ann Applicant")],
            subject=SUBJECT,
            text=text,
            html=html,
            headers={"X-Campaign": "applications"},
        )
        return render(message, domain_for_id=DOMAIN).data

    return run


def _email_message(text: str, html: str) -> Callable[[], bytes]:
    def run() -> bytes:
        message = EmailMessage()
        message["From"] = Address("Acme Jobs", addr_spec="jobs@acme.example")
        message["To"] = Address("Ann Applicant", addr_spec="ann@example.com")
        message["Subject"] = SUBJECT
        message["X-Campaign"] = "applications"
        message.set_content(text)
        message.add_alternative(html, subtype="html")
        return message.as_bytes(policy=policy.SMTP)

    return run


def measure(function: Callable[[], bytes], count: int) -> tuple[float, int]:
    """Best seconds per message over three rounds, and the size of one message."""
    size = len(function())
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(count):
            function()
        best = min(best, (time.perf_counter() - start) / count)
    return best, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5000, help="messages per round")
    args = parser.parse_args()
    cases: list[tuple[str, Callable[[], bytes], int]] = [
        ("render, ASCII, same recipient", _render(TEXT, HTML, unique=False), args.count),
        ("render, ASCII, new recipient each", _render(TEXT, HTML, unique=True), args.count),
        ("render, German (quoted-printable)", _render(TEXT_DE, HTML_DE, unique=False), args.count),
        ("EmailMessage + as_bytes(SMTP), ASCII", _email_message(TEXT, HTML), args.count // 10),
        (
            "EmailMessage + as_bytes(SMTP), German",
            _email_message(TEXT_DE, HTML_DE),
            args.count // 10,
        ),
    ]
    results = [(name, *measure(function, count)) for name, function, count in cases]
    baseline = results[3][1]
    print(f"{'case':40} {'messages/s':>11} {'µs/message':>11} {'bytes':>6} {'vs baseline':>12}")
    for name, seconds, size in results:
        print(
            f"{name:40} {1 / seconds:>11,.0f} {seconds * 1e6:>11.1f} {size:>6} "
            f"{baseline / seconds:>11.1f}x"
        )


if __name__ == "__main__":
    main()
