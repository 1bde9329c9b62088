"""Options several commands share, defined once so their names and help stay the same."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = [
    "AllowNetworkOption",
    "CaFileOption",
    "JsonFlag",
    "NoGuardFlag",
    "RcptOption",
    "SendTestToOption",
    "StepTimeoutOption",
]

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
CaFileOption = Annotated[
    Path | None, typer.Option(help="Trust this CA certificate (PEM) instead of the system's.")
]
RcptOption = Annotated[
    str | None, typer.Option(help="RCPT TO address to try (default: the sender).")
]
SendTestToOption = Annotated[
    str | None, typer.Option(help="Send one real test message to this address.")
]
StepTimeoutOption = Annotated[float, typer.Option(help="Seconds each step may take.")]
NoGuardFlag = Annotated[
    bool,
    typer.Option(
        "--no-guard", help="Allow private and loopback addresses and any port (no guard)."
    ),
]
AllowNetworkOption = Annotated[
    list[str] | None,
    typer.Option(
        "--allow-network",
        metavar="CIDR",
        help="Allow this private network (repeatable), e.g. 10.20.0.0/16.",
    ),
]
