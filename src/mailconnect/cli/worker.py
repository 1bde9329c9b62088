"""`mailconnect worker`: deliver the outbox's messages, until stopped or (``--once``) until
nothing is due.

SIGTERM and SIGINT (Ctrl-C) stop it gracefully: every session finishes the message it is sending,
gives the rest of its batch back to the queue unsent and says QUIT; then the worker exits 0 with
its summary. Many workers may run at once, on one machine or several (PostgreSQL).

The network guard is on: a connection's server must have a public address on a mail port (25,
465, 587, 2525), since tenants choose the hosts. ``--allow-network`` exempts a network of your
own (an on-premises Exchange at 10.20.0.5); ``--no-guard`` turns the guard off (tests, a relay
on this machine).
"""

from __future__ import annotations

import asyncio
import signal
import threading
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from mailconnect.cli.options import AllowNetworkOption, CaFileOption, NoGuardFlag
from mailconnect.cli.output import console, emit_json, err_console
from mailconnect.cli.tenants import JsonFlag, open_store, operator_errors
from mailconnect.netguard import GuardPolicy
from mailconnect.outbox import (
    CLAIMABLE,
    DEFAULT_WINDOW,
    EventKind,
    MessageState,
    Outbox,
    WorkerEvent,
    WorkerStats,
    count_messages,
    run_worker,
)
from mailconnect.smtp import TlsPolicy

if TYPE_CHECKING:
    from mailconnect.cli.worker_metrics import WorkerMetrics

__all__ = ["worker"]

_REPORTED = frozenset({EventKind.SESSION_FAILED, EventKind.HELD, EventKind.THROTTLED})


def worker(
    concurrency: Annotated[int, typer.Option(min=1, max=1000, help="SMTP sessions at a time.")] = 4,
    once: Annotated[
        bool, typer.Option("--once", help="Deliver what is due now, then exit.")
    ] = False,
    ca_file: CaFileOption = None,
    no_guard: NoGuardFlag = False,
    allow_network: AllowNetworkOption = None,
    resend_uncertain: Annotated[
        bool,
        typer.Option(
            "--resend-uncertain",
            help="Also send messages that may have arrived already (they may arrive twice).",
        ),
    ] = False,
    lease_seconds: Annotated[
        float,
        typer.Option(min=0.5, help="Seconds a claimed message stays with this worker unrenewed."),
    ] = 60.0,
    window: Annotated[
        int,
        typer.Option(
            min=1,
            max=1000,
            help=(
                "Messages of a session per pair of commits: faster when larger, but a worker "
                "killed outright leaves up to this many per session uncertain."
            ),
        ),
    ] = DEFAULT_WINDOW,
    poll_interval: Annotated[
        float,
        typer.Option(
            min=0.05,
            max=3600,
            help=(
                "Seconds an idle worker waits before it looks for due messages again. On "
                "SQLite a worker learns of messages enqueued by another process only so; "
                "PostgreSQL wakes it at once."
            ),
        ),
    ] = 2.0,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            min=1, max=65535, help="Serve Prometheus metrics on this port (GET /metrics)."
        ),
    ] = None,
    metrics_host: Annotated[
        str, typer.Option(help="The address the metrics port listens on.")
    ] = "127.0.0.1",
    as_json: JsonFlag = False,
) -> None:
    """Deliver queued messages. Exit 0 after a graceful stop (SIGTERM, Ctrl-C) or with --once."""
    with operator_errors(as_json):
        guard = (
            GuardPolicy.off()
            if no_guard
            else GuardPolicy.parse(enabled=True, allow_networks=allow_network or None)
        )
        tls = TlsPolicy(ca_file=ca_file)
        tls.context()  # an unreadable CA file is bad usage, before anything starts
        with open_store(poll_interval=poll_interval) as outbox:
            stats = asyncio.run(
                _run(
                    outbox,
                    concurrency=concurrency,
                    once=once,
                    guard=guard,
                    tls=tls,
                    resend_uncertain=resend_uncertain,
                    lease_seconds=lease_seconds,
                    window=window,
                    metrics=(metrics_host, metrics_port) if metrics_port else None,
                    as_json=as_json,
                )
            )
    if as_json:
        emit_json({"stats": stats.as_dict(), "sent": stats.sent, "attempted": stats.attempted})
        return
    outcomes = ", ".join(f"{state.value} {n}" for state, n in sorted(stats.outcomes.items()))
    console.print(
        f"[bold]Worker finished[/] after {stats.seconds:.1f} s: "
        f"{outcomes or 'nothing to deliver'} "
        f"[dim]({stats.sessions} sessions, {stats.session_failures} failed to open, "
        f"{stats.released} given back)[/]"
    )


class _Display:
    """The progress bar (a TTY without --json) and one line per problem an operator must see."""

    def __init__(self, outbox: Outbox, *, once: bool, as_json: bool) -> None:
        self.as_json = as_json
        visible = not as_json and err_console.is_terminal
        columns = (
            [TextColumn("[bold]Delivering"), BarColumn(), MofNCompleteColumn()]
            if once
            else [SpinnerColumn(), TextColumn("[bold]Delivering")]
        )
        self.progress = Progress(
            *columns,
            TextColumn("{task.fields[summary]}"),
            TimeElapsedColumn(),
            console=err_console,
            transient=True,
            disable=not visible,
        )
        total = None
        if once and visible:
            counts = count_messages(outbox)
            total = sum(counts[state] for state in CLAIMABLE)
        self.task: TaskID = self.progress.add_task("deliver", total=total, summary="")
        self.sent = 0
        self.other = 0

    def __call__(self, event: WorkerEvent) -> None:
        if event.kind is EventKind.MESSAGE:
            if event.state is MessageState.SENT:
                self.sent += 1
            else:
                self.other += 1
            self.progress.update(
                self.task, advance=1, summary=f"sent {self.sent}, not sent {self.other}"
            )
        elif event.kind in _REPORTED and not self.as_json:
            detail = f": {event.detail}" if event.detail else ""
            self.progress.console.print(
                f"[yellow]! {event.kind.value}[/] connection {event.connection_id}{escape(detail)}"
            )


async def _run(
    outbox: Outbox,
    *,
    concurrency: int,
    once: bool,
    guard: GuardPolicy,
    tls: TlsPolicy,
    resend_uncertain: bool,
    lease_seconds: float,
    window: int,
    metrics: tuple[str, int] | None,
    as_json: bool,
) -> WorkerStats:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []

    def stopping(sig: signal.Signals) -> None:
        if not stop.is_set() and not as_json:
            err_console.print(f"[yellow]{sig.name}: stopping after the messages being sent...[/]")
        stop.set()

    # Before the signal handlers: a taken port refuses here, with nothing to undo.
    exporter: WorkerMetrics | None = None
    if metrics:
        # Imported here: prometheus_client only for a worker that serves metrics.
        from mailconnect.cli import worker_metrics

        exporter = worker_metrics.WorkerMetrics(outbox, *metrics)
    try:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stopping, sig)
                installed.append(sig)
        display = _Display(outbox, once=once, as_json=as_json)

        def progress(event: WorkerEvent) -> None:
            display(event)
            if exporter is not None:
                exporter.metrics.worker_event(event)

        if not as_json and not once:
            err_console.print(
                f"Worker started: {concurrency} sessions at a time, looking for due messages "
                f"every {outbox.poll_interval:g} s when idle. Stop with Ctrl-C or SIGTERM."
            )
            if exporter is not None:
                err_console.print(f"Metrics: {exporter.address}")
        with display.progress:
            return await run_worker(
                outbox,
                concurrency=concurrency,
                once=once,
                stop=stop,
                guard=guard,
                tls=tls,
                resend_uncertain=resend_uncertain,
                lease_seconds=lease_seconds,
                window=window,
                # (none for --json without metrics: no event to show, none to build)
                progress=progress if exporter is not None or not as_json else None,
            )
    finally:
        if exporter is not None:
            exporter.close()
        for sig in installed:
            loop.remove_signal_handler(sig)
