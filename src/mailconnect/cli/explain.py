"""`mailconnect explain`: the diagnosis for a reply or an error someone pasted."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from mailconnect.cli.output import EXIT_NO, emit_json, print_diagnosis, usage_errors
from mailconnect.diagnosis import Cause
from mailconnect.diagnosis import explain as explain_text
from mailconnect.errors import ConfigurationError


def explain(
    text: Annotated[
        str,
        typer.Argument(
            metavar="'REPLY OR ERROR TEXT'",
            help="A server reply or client error, as copied from a log or bounce; - reads stdin.",
        ),
    ],
    provider: Annotated[str | None, typer.Option(help="Provider id, to pick its wording.")] = None,
    stage: Annotated[
        str | None, typer.Option(help="Where it happened: connect, tls, auth, mail_from, ...")
    ] = None,
    port: Annotated[str | None, typer.Option(help="The port that was used, if known.")] = None,
    security: Annotated[str | None, typer.Option(help="tls | starttls | none, if known.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Explain a pasted SMTP reply or error: cause, who must act, the fix.

    Exit 0 when the text was recognised, 1 when only a generic answer could be given.
    """
    with usage_errors(as_json):
        if text == "-":
            text = sys.stdin.read()
        if not text.strip():
            raise ConfigurationError(
                "text", "there is nothing to explain", "paste the server's reply or the error"
            )
        diagnosis = explain_text(text, provider=provider, stage=stage, port=port, security=security)
    if as_json:
        emit_json(diagnosis.as_dict())
    else:
        print_diagnosis(diagnosis)
    if diagnosis.cause is Cause.UNKNOWN:
        raise typer.Exit(EXIT_NO)
