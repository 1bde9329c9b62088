"""How the CLI speaks: rich text for people, JSON for scripts, and one place for exit codes.

Exit codes (documented in docs/cli.md):
    0  success (settings usable, warnings allowed; test passed)
    1  the answer is "no" (an error finding, a failed test)
    2  bad usage (an unknown option, an invalid value): the message names the field
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from mailconnect.diagnosis import Diagnosis
from mailconnect.errors import ConfigurationError
from mailconnect.findings import Finding, Severity

__all__ = [
    "EXIT_BAD_USAGE",
    "EXIT_NO",
    "EXIT_OK",
    "console",
    "emit_json",
    "print_diagnosis",
    "print_findings",
    "usage_errors",
]

EXIT_OK = 0
EXIT_NO = 1
EXIT_BAD_USAGE = 2

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

MARKS = {Severity.ERROR: "[bold red]✗ error[/]", Severity.WARNING: "[yellow]! warning[/]"}


def emit_json(data: Any) -> None:
    """One JSON document on stdout, UTF-8, stable key order."""
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


@contextmanager
def usage_errors(as_json: bool) -> Iterator[None]:
    """Turn a ConfigurationError into a message naming the field, and exit 2."""
    try:
        yield
    except ConfigurationError as exc:
        if as_json:
            emit_json({"error": exc.as_dict()})
        else:
            err_console.print(f"[bold red]Invalid {escape(exc.field)}:[/] {escape(exc.problem)}.")
            err_console.print(f"  {escape(exc.fix)}")
        raise typer.Exit(EXIT_BAD_USAGE) from None


def print_findings(findings: list[Finding], write: Callable[[str], None] | None = None) -> None:
    out = write or console.print
    for finding in findings:
        out(f"{MARKS[finding.severity]} [bold]{escape(finding.code)}[/]")
        out(f"  {escape(finding.message)}")
        out(f"  [green]Fix:[/] {escape(finding.remedy)}")
        out(f"  [dim]Source: {escape(finding.source)}[/]")


def print_diagnosis(diagnosis: Diagnosis, write: Callable[[str], None] | None = None) -> None:
    """A diagnosis for a person: the cause, who must act, the steps, the documentation."""
    out = write or console.print
    out(f"[bold]{escape(diagnosis.title)}[/] [dim]({diagnosis.cause.value})[/]")
    out(f"  {escape(diagnosis.explanation)}")
    if diagnosis.reply is not None and diagnosis.reply.code is not None:
        enhanced = f" {diagnosis.reply.enhanced}" if diagnosis.reply.enhanced else ""
        said = f"{diagnosis.reply.code}{enhanced} {diagnosis.reply.text}"
        out(f"  [dim]Server said: {escape(said)}[/]")
    out(f"  [bold]Who must act:[/] {escape(diagnosis.actor.label)}")
    for number, step in enumerate(diagnosis.fix_steps, 1):
        out(f"  {number}. {escape(step)}")
    if diagnosis.doc_url:
        out(f"  [dim]More: {diagnosis.doc_url}[/]")
    retry = "Trying again later may work." if diagnosis.retryable else "Retrying will not help."
    out(f"  [dim]{retry}[/]")
