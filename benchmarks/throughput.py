"""Delivery throughput: mailconnect end to end against Postfix's own SMTP client, on loopback.

    .venv/bin/python benchmarks/throughput.py [--messages 20000] [--sessions 20]
                                              [--memory-sessions 50] [--processes 2]
                                              [--large-messages 200] [--no-postgres]

The receiver is Postfix's ``smtp-sink`` (C, no TLS, no AUTH), started here on a free loopback
port. Every case sends ``--messages`` messages of about 2 KB to it; one run, one table:

anchor          ``smtp-source -d -s SESSIONS -l 2048 -m N`` (C, Postfix's load generator; each
                of its sessions keeps its connection for many messages).
smtplib         Python's smtplib, one connection, the messages prebuilt as bytes.
mailconnect     end to end: ``enqueue_many`` of N messages (one durable transaction: committed,
                on SQLite with ``synchronous=FULL``), then ``run_worker(once=True)`` with SESSIONS
                sessions until every message is sent and marked ``sent`` (checked with a count).
                On SQLite, and on PostgreSQL in a fresh database (127.0.0.1:5432, dropped after).
large           the same end to end on SQLite with ``--large-messages`` messages of 1 MB (a
                text body the size of an attached CV): not comparable with the anchor's 2 KB, no
                verdict; what it shows is the cost of a big message row in delivery.
floors          where the time of the end-to-end rows goes: the same SMTP exchange with nothing
                else (asyncio, prebuilt messages, no database, transcript or judgement), and
                the worker's database work with no SMTP (its own claim, load, open and store
                functions, one thread, batches and windows as the worker makes them).
memory          ``mailconnect worker --once --concurrency 50`` (the CLI command, a child process)
                delivering N messages from SQLite; its peak RSS (VmHWM in /proc, sampled every
                5 ms), and the most sessions the sink saw open at once.
processes       ``--processes`` such commands at once, SESSIONS sessions each, sharing one outbox
                (SQLite, then PostgreSQL in a fresh database): the scale-out for more cores than
                one worker uses; delivery only, process start included, CPU summed over them.

Columns: messages per second (wall clock; for mailconnect enqueue plus delivery), the ratio to
the anchor, the client's CPU in microseconds per message (``getrusage``: the child for
smtp-source and the worker command, this process for smtplib and mailconnect, whose SQLite and
worker threads run here), and the CPU of the receiving side (the sink; for PostgreSQL also every
``postgres`` server process, with the backends that exited meanwhile, which the postmaster
counts as its children's time) read from /proc. Security ``none`` and auth ``none`` are what the
sink speaks; the rules allow that with a warning (checked below). Goals: end to end >= 0.35 x the
anchor on SQLite and PostgreSQL, bulk enqueue >= 10,000 messages/s, worker peak RSS <= 150 MB
with 50 sessions. Everything stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import resource
import secrets
import shutil
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import psycopg
from psycopg import sql
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from mailconnect.compose import Mailbox, MessageInput, dot_stuff_for_wire, render
from mailconnect.config import load_config
from mailconnect.findings import Severity, blocking
from mailconnect.netguard import GuardPolicy
from mailconnect.outbox import MessageState, Outbox, enqueue_many, run_worker
from mailconnect.outbox.claim import Claimed, claim
from mailconnect.outbox.groupcommit import GroupCommit
from mailconnect.outbox.records import (
    AttemptRecord,
    Finished,
    Opening,
    Outgoing,
    RecipientUpdate,
    Settlement,
    finish_many,
    load_outgoing_many,
    open_attempts_many,
)
from mailconnect.outbox.worker import DEFAULT_WINDOW
from mailconnect.rules import lint
from mailconnect.settings import ConnectionSettings
from mailconnect.store import Message, create_connection, create_tenant
from mailconnect.store.states import AttemptOutcome, RecipientState
from mailconnect.store.types import utcnow

HOST = "127.0.0.1"
SENDER = "bench@acme.example"
SIZE = 2048
LARGE = 1_000_000  # octets: the large-message row (a text body the size of an attached CV)
SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
SMTP_SOURCE = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
POSTGRES_URL = os.environ.get(
    "MAILCONNECT_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
TICK = os.sysconf("SC_CLK_TCK")
CHUNK = 1_000  # messages per enqueue_many when the enqueue runs beside the worker
SIDE_BY_SIDE_LIMIT = 600.0  # seconds for every message to end sent when enqueued beside it
STOP_SECONDS = 30.0  # for a worker told to stop (SIGTERM) before it is killed
WORKER_COMMAND = "import typer; from mailconnect.cli.worker import worker; typer.run(worker)"


# --- measuring ----------------------------------------------------------------------------------


def _process_cpu(pid: int, *, children: bool = False) -> float:
    """Seconds of CPU (user + system) a live process has used, from /proc; with ``children``,
    also what its exited children used (those it waited for)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / TICK


def postgres_cpu() -> float:
    """CPU seconds of the postgres server processes on this machine (the database's share),
    including backends that have exited: the postmaster, which waits for them, counts theirs.
    Every postgres process counts: autovacuum too, and another client's backends if one runs
    at the same time (run the benchmark on a quiet server)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            name = (entry / "comm").read_text().strip()
        except OSError:
            continue
        if name == "postgres":
            total += _process_cpu(int(entry.name), children=True)
    return total


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Row:
    case: str
    messages: int
    seconds: float
    client_cpu: float
    server_cpu: float
    note: str = ""

    @property
    def rate(self) -> float:
        return self.messages / self.seconds


@dataclass
class Results:
    rows: list[Row] = field(default_factory=list)
    enqueue: dict[str, float] = field(default_factory=dict)  # database -> messages/s
    memory_mb: float | None = None
    memory_sessions: int = 0
    peak_sessions: int = 0


# --- the sink -----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
    return port


class Sink:
    """Postfix's smtp-sink on a loopback port; counts the sessions it has open (its sockets)."""

    def __init__(self) -> None:
        self.port = _free_port()
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        self.process = subprocess.Popen(
            [SMTP_SINK, *user, "-m", "1000", f"{HOST}:{self.port}", "1024"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection((HOST, self.port), 0.2):
                break
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"smtp-sink did not start: {self._stderr()}")
            time.sleep(0.02)
        self.base_fds = self._fds()

    def _stderr(self) -> str:
        return self.process.stderr.read().decode() if self.process.stderr else ""

    def _fds(self) -> int:
        try:
            return len(os.listdir(f"/proc/{self.process.pid}/fd"))
        except OSError:
            return 0

    def cpu(self) -> float:
        return _process_cpu(self.process.pid)

    def sessions(self) -> int:
        """Connections open now (the sink's descriptors beyond those it started with)."""
        return self._fds() - self.base_fds

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
        if self.process.stderr:
            self.process.stderr.close()


def receiving_cpu(sink: Sink, postgres: bool) -> float:
    """CPU seconds of the receiving side so far: the sink's, plus PostgreSQL's when it runs."""
    return sink.cpu() + (postgres_cpu() if postgres else 0.0)


def _peak_rss_mb(pid: int) -> float:
    """The process's peak resident set (VmHWM) in MB, from /proc; 0 once it has exited.

    Not ``wait4``'s ``ru_maxrss``: for a child started with fork or vfork and exec, Linux counts
    the parent's resident set at the exec too (a 300 MB parent makes ``python -c pass`` a 310 MB
    child).
    """
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class Watch:
    """Samples, every 5 ms while a child runs: its peak RSS and the sessions the sink has open."""

    def __init__(self, pid: int, sink: Sink) -> None:
        self.pid = pid
        self.sink = sink
        self.peak_mb = 0.0
        self.peak_sessions = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.wait(0.005):
            self.peak_mb = max(self.peak_mb, _peak_rss_mb(self.pid))
            self.peak_sessions = max(self.peak_sessions, self.sink.sessions())

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


# --- the cases ----------------------------------------------------------------------------------


def anchor(sink: Sink, count: int, sessions: int) -> Row:
    command = [SMTP_SOURCE, "-d", "-s", str(sessions), "-l", str(SIZE), "-m", str(count)]
    command += ["-f", SENDER, "-t", "rcpt@example.com", f"{HOST}:{sink.port}"]
    sink_before = sink.cpu()
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    errors = child.stderr.read().decode().strip() if child.stderr else ""
    if child.stderr:
        child.stderr.close()
    if child.returncode != 0:
        raise SystemExit(f"smtp-source failed ({child.returncode}): {errors}")
    return Row(
        f"anchor: smtp-source -d -s {sessions} (C)",
        count,
        seconds,
        usage.ru_utime + usage.ru_stime,
        sink.cpu() - sink_before,
        "Postfix's load generator",
    )


def _raw_message(index: int) -> bytes:
    head = (
        f"From: {SENDER}\r\nTo: rcpt{index}@example.com\r\nSubject: Benchmark {index}\r\n"
        f"Message-ID: <{uuid.uuid4().hex}@acme.example>\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n\r\n"
    ).encode()
    line = b"The quick brown fox jumps over the lazy dog, again and again and again.\r\n"
    body = (line * (SIZE // len(line) + 1))[: SIZE - len(head) - 2] + b"\r\n"
    return head + body


def baseline(sink: Sink, count: int) -> Row:
    messages = [_raw_message(i) for i in range(count)]
    sink_before = sink.cpu()
    cpu_before = _self_cpu()
    start = time.perf_counter()
    with smtplib.SMTP(HOST, sink.port) as client:
        client.ehlo("bench.acme.example")
        for index, data in enumerate(messages):
            client.sendmail(SENDER, [f"rcpt{index}@example.com"], data)
    seconds = time.perf_counter() - start
    return Row(
        "smtplib, 1 connection (Python)",
        count,
        seconds,
        _self_cpu() - cpu_before,
        sink.cpu() - sink_before,
        "prebuilt messages",
    )


def text_for_size(size: int = SIZE) -> str:
    """A text body that makes the rendered message about ``size`` octets."""
    probe = render(candidate_message(0, ""), domain_for_id="acme.example")
    paragraph = "Thank you for your application; we will be in touch within two weeks. "
    return (paragraph * (size // len(paragraph) + 1))[: max(size - probe.size - 2, 0)]


def candidate_message(index: int, text: str) -> MessageInput:
    return MessageInput(
        from_=Mailbox(SENDER, "Acme Benchmark"),
        to=[f"rcpt{index}@example.com"],
        subject=f"Your application, number {index}",
        text=text,
    )


def candidate_messages(count: int, size: int = SIZE, first: int = 0) -> list[MessageInput]:
    """``count`` messages of about ``size`` octets, numbered from ``first``."""
    text = text_for_size(size)
    return [candidate_message(index, text) for index in range(first, first + count)]


def driver_conninfo(url: str) -> str:
    """A SQLAlchemy PostgreSQL URL as psycopg's connection string."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _settings(port: int) -> ConnectionSettings:
    settings = ConnectionSettings.parse(
        host=HOST, port=port, security="none", auth="none", sender=SENDER
    )
    findings = lint(settings)
    assert not blocking(findings), findings
    assert any(f.severity is Severity.WARNING for f in findings)  # cleartext: a warning only
    return settings


def bench_tenant(outbox: Outbox, port: int) -> tuple[uuid.UUID, uuid.UUID]:
    """The benchmark's tenant and its connection to the sink on ``port``."""
    with outbox.transaction() as session:
        tenant = create_tenant(session, external_id="bench", name="Benchmark")
        connection = create_connection(session, tenant.id, name="sink", settings=_settings(port))
        return tenant.id, connection.id


def _filled(outbox: Outbox, port: int, count: int) -> tuple[uuid.UUID, uuid.UUID]:
    """The benchmark's tenant and connection, with ``count`` messages enqueued for them."""
    tenant_id, connection_id = bench_tenant(outbox, port)
    messages = candidate_messages(count)
    enqueue_many(outbox, tenant_id=tenant_id, messages=messages, connection_id=connection_id)
    return tenant_id, connection_id


def _states(outbox: Outbox) -> dict[str, int]:
    with outbox.reading() as session:
        query = select(Message.state, func.count()).group_by(Message.state)
        return {str(state): int(n) for state, n in session.execute(query)}


def _reaped(child: subprocess.Popen[bytes], seconds: float) -> resource.struct_rusage:
    """Wait for a child told to stop, its CPU times; killed if it has not exited in time."""
    deadline = time.monotonic() + seconds
    while True:
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid:
            child.returncode = os.waitstatus_to_exitcode(status)
            return usage
        if time.monotonic() > deadline:
            child.kill()
            _, status, usage = os.wait4(child.pid, 0)
            child.returncode = os.waitstatus_to_exitcode(status)
            return usage
        time.sleep(0.05)


def _sent(outbox: Outbox) -> int:
    with outbox.reading() as session:
        query = select(func.count()).select_from(Message).where(Message.state == MessageState.SENT)
        return int(session.scalar(query) or 0)


def end_to_end(
    sink: Sink,
    database: str,
    url: str,
    data_dir: Path,
    count: int,
    sessions: int,
    size: int = SIZE,
) -> tuple[Row, float]:
    """Enqueue ``count`` messages of about ``size`` octets, then deliver them; the row and the
    enqueue's rate."""
    outbox = Outbox.open(load_config(data_dir=data_dir, database_url=url))
    try:
        tenant_id, connection_id = bench_tenant(outbox, sink.port)
        messages = candidate_messages(count, size)
        rendered = render(messages[0], domain_for_id="acme.example").size
        postgres = database == "PostgreSQL"
        server_before = receiving_cpu(sink, postgres)
        cpu_before = _self_cpu()
        start = time.perf_counter()
        enqueue_many(outbox, tenant_id=tenant_id, messages=messages, connection_id=connection_id)
        enqueued = time.perf_counter()
        stats = asyncio.run(
            run_worker(outbox, concurrency=sessions, once=True, guard=GuardPolicy.off())
        )
        sent = _sent(outbox)
        seconds = time.perf_counter() - start
        client_cpu = _self_cpu() - cpu_before
        server_cpu = receiving_cpu(sink, postgres) - server_before
    finally:
        outbox.close()
    if sent != count or stats.sent != count:
        raise SystemExit(f"{database}: {sent} of {count} messages marked sent ({stats.as_dict()})")
    delivery = seconds - (enqueued - start)
    case = f"mailconnect, {database}, {sessions} sessions"
    if size != SIZE:  # (not comparable with the anchor's messages: no verdict for it)
        case = f"messages of {size / 1e6:g} MB: mailconnect, {database}, {sessions} sessions"
    note = f"{rendered} B; delivery alone {count / delivery:,.0f}/s"
    row = Row(
        case,
        count,
        seconds,
        client_cpu,
        server_cpu,
        note,
    )
    return row, count / (enqueued - start)


def side_by_side(
    sink: Sink, data_dir: Path, count: int, sessions: int, url: str | None = None
) -> Row:
    """End to end with the enqueue and the delivery at the same time, as a service and its
    worker run them: this process enqueues the messages in chunks of CHUNK (each chunk one
    durable ``enqueue_many``) while the worker command, a child process, delivers them; the
    clock runs from the first enqueue until every message is marked sent. The worker starts
    right after the first chunk is stored (its start is in the time): on SQLite a worker in
    another process learns of new messages only by looking again after its poll interval, so
    one started on an empty outbox would first sleep."""
    url_given = url is not None
    database = "PostgreSQL" if url_given else "SQLite"
    url = url or f"sqlite:///{data_dir / 'side.db'}"
    data_dir.mkdir(parents=True, exist_ok=True)
    outbox = Outbox.open(load_config(data_dir=data_dir, database_url=url))
    environment = {
        **os.environ,
        "MAILCONNECT_DATA_DIR": str(data_dir),
        "MAILCONNECT_DATABASE_URL": url,
    }
    command = [sys.executable, "-c", WORKER_COMMAND, "--no-guard", "--json"]
    command += ["--concurrency", str(sessions)]
    out_file, err_file = data_dir / "side.out", data_dir / "side.err"
    child: subprocess.Popen[bytes] | None = None
    try:
        tenant_id, connection_id = bench_tenant(outbox, sink.port)
        messages = candidate_messages(count)
        if url_given:
            time.sleep(0.3)  # the set-up's backends exit and are counted before the clock starts
        server_before = receiving_cpu(sink, url_given)
        cpu_before = _self_cpu()
        start = time.perf_counter()
        for first in range(0, count, CHUNK):
            chunk = messages[first : first + CHUNK]
            enqueue_many(outbox, tenant_id=tenant_id, messages=chunk, connection_id=connection_id)
            if child is None:
                with out_file.open("wb") as stdout, err_file.open("wb") as stderr:
                    child = subprocess.Popen(command, env=environment, stdout=stdout, stderr=stderr)
        assert child is not None
        deadline = time.monotonic() + SIDE_BY_SIDE_LIMIT
        # A count every 0.1 s: its CPU is in the client column (and PostgreSQL's in the
        # server's), about 150 small queries in a run; the clock reads 0.1 s late at most.
        while _sent(outbox) < count:
            if child.poll() is not None:
                raise SystemExit(f"the worker command stopped: {err_file.read_text()}")
            if time.monotonic() > deadline:  # a message that did not end sent: the worker waits
                raise SystemExit(
                    f"{database}, side by side: not all sent in time ({_states(outbox)})"
                )
            time.sleep(0.1)
        seconds = time.perf_counter() - start
        client_cpu = _self_cpu() - cpu_before
        child.terminate()  # SIGTERM: a graceful stop
        usage = _reaped(child, STOP_SECONDS)
        if url_given:
            time.sleep(0.3)  # the postmaster counts an exited backend's CPU once it has reaped it
        server_cpu = receiving_cpu(sink, url_given) - server_before
    finally:
        if child is not None and child.returncode is None:
            child.kill()
            child.wait()
        outbox.close()
    if child.returncode != 0:
        raise SystemExit(f"the worker command failed: {err_file.read_text()}")
    sent = json.loads(out_file.read_text())["sent"]
    if sent != count:
        raise SystemExit(f"{database}, side by side: the worker sent {sent} of {count} messages")
    return Row(
        f"mailconnect, {database}, enqueue beside the worker",
        count,
        seconds,
        client_cpu + usage.ru_utime + usage.ru_stime,
        server_cpu,
        f"2 processes: enqueue in chunks of {CHUNK:,}; worker CLI, {sessions} sessions",
    )


class _ReplyCounter(asyncio.Protocol):
    """The least a pipelining client must do with replies: count complete ones."""

    def __init__(self) -> None:
        self.buffer = b""
        self.replies = 0
        self.wanted = 0
        self.refusals: list[bytes] = []
        self.waiter: asyncio.Future[None] | None = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n" in self.buffer:
            line, _, self.buffer = self.buffer.partition(b"\r\n")
            if line[3:4] != b"-":
                self.replies += 1
                if line[:1] in (b"4", b"5"):  # the floors expect every command to succeed
                    self.refusals.append(line)
        if self.waiter is not None and self.replies >= self.wanted and not self.waiter.done():
            self.waiter.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc or ConnectionResetError("the sink closed the connection"))

    async def expect(self, count: int) -> None:
        self.wanted += count
        if self.replies < self.wanted:
            self.waiter = asyncio.get_running_loop().create_future()
            await self.waiter
        if self.refusals:
            raise RuntimeError(f"the sink refused: {self.refusals[0]!r}")


async def _bare_session(port: int, messages: list[tuple[int, bytes]]) -> None:
    loop = asyncio.get_running_loop()
    transport, client = await loop.create_connection(_ReplyCounter, HOST, port)
    await client.expect(1)
    transport.write(b"EHLO bench.acme.example\r\n")
    await client.expect(1)
    for index, data in messages:
        envelope = f"MAIL FROM:<{SENDER}>\r\nRCPT TO:<rcpt{index}@example.com>\r\nDATA\r\n"
        transport.write(envelope.encode())
        await client.expect(3)
        transport.write(data + b".\r\n")  # _raw_message has no line starting with "."
        await client.expect(1)
    transport.write(b"QUIT\r\n")
    await client.expect(1)
    transport.close()


def smtp_floor(sink: Sink, count: int, sessions: int) -> Row:
    """The SMTP exchange mailconnect makes (MAIL, RCPT and DATA pipelined, then the message),
    with no database, transcript or judgement: what Python's asyncio itself costs."""
    messages = [(index, _raw_message(index)) for index in range(count)]

    async def run() -> None:
        await asyncio.gather(
            *(_bare_session(sink.port, messages[k::sessions]) for k in range(sessions))
        )

    sink_before = sink.cpu()
    cpu_before = _self_cpu()
    start = time.perf_counter()
    asyncio.run(run())
    seconds = time.perf_counter() - start
    return Row(
        f"floor: SMTP alone, asyncio, {sessions} sessions",
        count,
        seconds,
        _self_cpu() - cpu_before,
        sink.cpu() - sink_before,
        "no database: the exchange only",
    )


def both_floor(sink: Sink, data_dir: Path, count: int, sessions: int) -> Row:
    """The worker's two necessary parts together and nothing else, on SQLite: ``sessions``
    sessions that each claim 50 messages, load them and, per window of DEFAULT_WINDOW, open the
    attempts, send the messages with the SMTP floor's exchange (the stored content, dot-stuffed)
    and store them as sent; the writes go through the worker's group commit, merged as the
    worker's are. No judging of replies, no transcript, none of the worker's bookkeeping: the
    distance from this row to the end-to-end one is what the worker's own machinery costs."""
    url = f"sqlite:///{data_dir / 'both.db'}"
    outbox = Outbox.open(load_config(data_dir=data_dir, database_url=url))
    executor = ThreadPoolExecutor(max_workers=6)
    try:
        tenant_id, connection_id = _filled(outbox, sink.port, count)
        sink_before = sink.cpu()
        cpu_before = _self_cpu()
        start = time.perf_counter()
        sent = asyncio.run(_both(outbox, executor, (tenant_id, connection_id), sink.port, sessions))
        seconds = time.perf_counter() - start
        client_cpu = _self_cpu() - cpu_before
        server_cpu = sink.cpu() - sink_before
        stored = _sent(outbox)
    finally:
        executor.shutdown(wait=True)
        outbox.close()
    if sent != count or stored != count:
        raise SystemExit(
            f"database work and SMTP together: {sent} of {count} messages sent, {stored} stored"
        )
    return Row(
        "floor: database work and SMTP, SQLite",
        count,
        seconds,
        client_cpu,
        server_cpu,
        f"no worker machinery, {sessions} sessions",
    )


async def _both(
    outbox: Outbox,
    executor: ThreadPoolExecutor,
    owner: tuple[uuid.UUID, uuid.UUID],
    port: int,
    sessions: int,
) -> int:
    tenant_id, connection_id = owner
    group = GroupCommit(outbox, executor)
    loop = asyncio.get_running_loop()

    async def claimed_batch() -> tuple[list[Claimed], dict[uuid.UUID, Outgoing]]:
        batch = await loop.run_in_executor(
            executor, outbox.run, _claim_batch, tenant_id, connection_id, outbox.batch_size
        )
        if not batch:
            return batch, {}
        ids = [claimed.id for claimed in batch]
        loaded = await loop.run_in_executor(
            executor, outbox.read, load_outgoing_many, tenant_id, ids
        )
        return batch, loaded

    async def session() -> int:
        transport, client = await loop.create_connection(_ReplyCounter, HOST, port)
        await client.expect(1)
        transport.write(b"EHLO bench.acme.example\r\n")
        await client.expect(1)
        sent = 0
        while True:
            batch, loaded = await claimed_batch()
            if not batch:
                break
            for first in range(0, len(batch), DEFAULT_WINDOW):
                window = batch[first : first + DEFAULT_WINDOW]
                started = utcnow()
                server = f"{HOST}:{port}"
                opened = await group.write_merged(
                    open_attempts_many,
                    [Opening(c, c.attempt_count + 1, "bench", started, server) for c in window],
                )
                done: list[Finished] = []
                for claimed, attempt_id in zip(window, opened, strict=True):
                    assert attempt_id is not None
                    outgoing = loaded[claimed.id]
                    recipients = [address for _, address, _ in outgoing.recipients]
                    envelope = f"MAIL FROM:<{outgoing.envelope_from}> SIZE={outgoing.size}\r\n"
                    envelope += "".join(f"RCPT TO:<{address}>\r\n" for address in recipients)
                    transport.write(f"{envelope}DATA\r\n".encode())
                    await client.expect(2 + len(recipients))
                    transport.write(dot_stuff_for_wire(outgoing.content))
                    await client.expect(1)
                    done.append(_as_sent(claimed, attempt_id, outgoing, started))
                await group.write_merged(_finish_all, [done])
                sent += len(done)
        transport.write(b"QUIT\r\n")
        await client.expect(1)
        transport.close()
        return sent

    return sum(await asyncio.gather(*(session() for _ in range(sessions))))


def _claim_batch(
    session: Session, tenant_id: uuid.UUID, connection_id: uuid.UUID, limit: int
) -> list[Claimed]:
    """A batch of the floors' queued messages, leased to "bench" for a minute."""
    now = utcnow()
    return claim(
        session,
        tenant_id=tenant_id,
        connection_id=connection_id,
        owner="bench",
        lease_until=now + timedelta(seconds=60),
        limit=limit,
        states=[MessageState.QUEUED],
        now=now,
    )


def _finish_all(session: Session, windows: list[list[Finished]]) -> list[None]:
    """Store several windows' results as sent, in one call (merged as the worker's are)."""
    finish_many(session, [item for window in windows for item in window], utcnow())
    return [None] * len(windows)


def records_floor(database: str, url: str, data_dir: Path, count: int) -> Row:
    """The worker's database work for ``count`` messages without SMTP, in one thread: claim 50,
    load them, open the attempts of each window of DEFAULT_WINDOW, then store them as sent (the
    worker's own functions; the windows of a batch share a commit and their statements, as the
    group commit lets the waiting writes of the worker's sessions do)."""
    outbox = Outbox.open(load_config(data_dir=data_dir, database_url=url))
    try:
        tenant_id, connection_id = _filled(outbox, 2525, count)
        postgres = database == "PostgreSQL"
        server_before = postgres_cpu() if postgres else 0.0
        cpu_before = _self_cpu()
        start = time.perf_counter()
        done = 0
        while True:
            now = utcnow()
            batch = outbox.run(_claim_batch, tenant_id, connection_id, outbox.batch_size)
            if not batch:
                break
            with outbox.reading() as session:
                outgoing = load_outgoing_many(session, tenant_id, [c.id for c in batch])
            windows = [
                batch[first : first + DEFAULT_WINDOW]
                for first in range(0, len(batch), DEFAULT_WINDOW)
            ]
            # The windows of a batch share a commit and each statement, as the worker's group
            # commit lets the writes of its sessions that wait together do (about eight).
            opened = outbox.run(_open_windows, windows)
            outbox.run(
                _finish_all,
                [
                    [_as_sent(c, opened[c.id], outgoing[c.id], now) for c in window]
                    for window in windows
                ],
            )
            done += len(batch)
        seconds = time.perf_counter() - start
        client_cpu = _self_cpu() - cpu_before
        server_cpu = postgres_cpu() - server_before if postgres else 0.0
    finally:
        outbox.close()
    if done != count:
        raise SystemExit(f"records floor, {database}: {done} of {count} messages")
    return Row(
        f"floor: the worker's database work, {database}",
        count,
        seconds,
        client_cpu,
        server_cpu,
        "no SMTP: claim, load, open, store",
    )


def _open_windows(session: Session, windows: list[list[Claimed]]) -> dict[uuid.UUID, uuid.UUID]:
    started_at = utcnow()
    openings = [
        Opening(claimed, claimed.attempt_count + 1, "bench", started_at, f"{HOST}:25")
        for window in windows
        for claimed in window
    ]
    opened = open_attempts_many(session, openings)
    return {o.claimed.id: a for o, a in zip(openings, opened, strict=True) if a is not None}


_TRANSCRIPT = (
    f"C: MAIL FROM:<{SENDER}> SIZE=2127\nS: 250 2.1.0 Ok\nC: RCPT TO:<rcpt@example.com>\n"
    "S: 250 2.1.5 Ok\nC: DATA\nS: 354 End data with <CR><LF>.<CR><LF>\n"
    "*: message of 2127 bytes\nS: 250 2.0.0 Ok: queued as 3F2A1B"
)


def _as_sent(
    claimed: Claimed, attempt_id: uuid.UUID, outgoing: Outgoing, now: datetime
) -> Finished:
    record = AttemptRecord(
        number=claimed.attempt_count + 1,
        started_at=now,
        duration_ms=1,
        outcome=AttemptOutcome.SENT,
        owner="bench",
        server_address=f"{HOST}:25",
        reply_code=250,
        enhanced_code="2.0.0",
        reply_text="2.0.0 Ok: queued as 3F2A1B",
        transcript=_TRANSCRIPT,
    )
    accepted = [
        RecipientUpdate(position, RecipientState.ACCEPTED, 250, "2.0.0", "Ok")
        for position, _, _ in outgoing.recipients
    ]
    return Finished(claimed, attempt_id, record, accepted, Settlement(MessageState.SENT, None))


def workers(
    sink: Sink,
    data_dir: Path,
    count: int,
    sessions: int,
    processes: int = 1,
    url: str | None = None,
) -> tuple[Row, float, int]:
    """The CLI worker in ``processes`` child processes at once, delivering ``count`` messages
    enqueued beforehand (into SQLite unless ``url`` names another database): the row, the first
    child's peak RSS, and the most sessions the sink saw open at once."""
    url_given = url is not None
    database = "PostgreSQL" if url_given else "SQLite"
    url = url or f"sqlite:///{data_dir / 'workers.db'}"
    outbox = Outbox.open(load_config(data_dir=data_dir, database_url=url))
    try:
        _filled(outbox, sink.port, count)
    finally:
        outbox.close()
    if url_given:
        time.sleep(0.3)  # the enqueue's backends exit and are counted before the clock starts
    environment = {
        **os.environ,
        "MAILCONNECT_DATA_DIR": str(data_dir),
        "MAILCONNECT_DATABASE_URL": url,
    }
    command = [sys.executable, "-c", WORKER_COMMAND, "--once", "--no-guard", "--json"]
    command += ["--concurrency", str(sessions)]
    outputs = [(data_dir / f"worker{n}.out", data_dir / f"worker{n}.err") for n in range(processes)]
    server_before = receiving_cpu(sink, url_given)
    cpu = 0.0
    start = time.perf_counter()
    children = []
    for out_file, err_file in outputs:
        with out_file.open("wb") as stdout, err_file.open("wb") as stderr:
            children.append(
                subprocess.Popen(command, env=environment, stdout=stdout, stderr=stderr)
            )
    watch = Watch(children[0].pid, sink)
    for child in children:
        # wait4 for the CPU times; its ru_maxrss would count this process's memory too.
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        cpu += usage.ru_utime + usage.ru_stime
    seconds = time.perf_counter() - start
    watch.stop()
    if url_given:
        time.sleep(0.3)  # the postmaster counts an exited backend's CPU once it has reaped it
    server_cpu = receiving_cpu(sink, url_given) - server_before
    sent = 0
    for child, (out_file, err_file) in zip(children, outputs, strict=True):
        output = out_file.read_text()
        if child.returncode != 0:
            raise SystemExit(f"the worker command failed: {output}\n{err_file.read_text()}")
        sent += json.loads(output)["sent"]
    if sent != count:
        raise SystemExit(f"the worker commands sent {sent} of {count} messages")
    label = "mailconnect worker CLI" + (f" x {processes} processes" if processes > 1 else "")
    each = " each" if processes > 1 else ""
    row = Row(
        f"{label}, {database}, {sessions} sessions{each}",
        count,
        seconds,
        cpu,
        server_cpu,
        "delivery only, with process start",
    )
    return row, watch.peak_mb, watch.peak_sessions


@contextlib.contextmanager
def postgres_database() -> Iterator[str | None]:
    """A fresh PostgreSQL database for one run (dropped afterwards); None when unreachable."""
    server = make_url(POSTGRES_URL)
    conninfo = driver_conninfo(POSTGRES_URL)
    try:
        admin = psycopg.connect(conninfo, autocommit=True, connect_timeout=3)
    except psycopg.Error as exc:
        print(f"PostgreSQL skipped: {str(exc).strip().splitlines()[0]}", file=sys.stderr)
        yield None
        return
    name = f"mailconnect_bench_{os.getpid()}_{secrets.token_hex(3)}"
    with admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield server.set(drivername="postgresql+psycopg", database=name).render_as_string(
                hide_password=False
            )
        finally:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


# --- the report ---------------------------------------------------------------------------------


def machine() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    memory_kb = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_kb = int(line.split()[1])
    return (
        f"{os.cpu_count()} CPUs ({model}), {memory_kb / 1024 / 1024:.1f} GiB RAM, "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}"
    )


def report(results: Results, anchor_rate: float, args: argparse.Namespace) -> None:
    print(machine())
    print(f"{args.messages:,} messages of about {SIZE} bytes to smtp-sink on {HOST}")
    header = (
        f"{'case':44} {'msgs/s':>8} {'x anchor':>8} {'client CPU':>10} {'server CPU':>10}  note"
    )
    print(header)
    print(f"{'':44} {'':>8} {'':>8} {'µs/msg':>10} {'µs/msg':>10}")
    for row in results.rows:
        print(
            f"{row.case:44} {row.rate:>8,.0f} {row.rate / anchor_rate:>8.2f} "
            f"{row.client_cpu / row.messages * 1e6:>10.1f} "
            f"{row.server_cpu / row.messages * 1e6:>10.1f}  {row.note}"
        )
    for database, rate in results.enqueue.items():
        verdict = "meets" if rate >= 10_000 else "misses"
        print(f"{'bulk enqueue_many, ' + database:44} {rate:>8,.0f}  ({verdict} >= 10,000/s)")
    if results.memory_mb is not None:
        verdict = "meets" if results.memory_mb <= 150 else "misses"
        print(
            f"{'worker peak RSS, ' + str(results.memory_sessions) + ' sessions':44} "
            f"{results.memory_mb:>6.1f} MB ({verdict} <= 150 MB; the sink saw "
            f"{results.peak_sessions} sessions open at once)"
        )
    for row in results.rows:
        if row.case.startswith("mailconnect, "):
            ratio = row.rate / anchor_rate
            verdict = "meets" if ratio >= 0.35 else "misses"
            print(f"{row.case}: {ratio:.2f} x anchor ({verdict} >= 0.35)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000, help="messages per case")
    parser.add_argument("--sessions", type=int, default=20, help="sessions: anchor, end to end")
    parser.add_argument("--memory-sessions", type=int, default=50, help="sessions: memory run")
    parser.add_argument("--no-postgres", action="store_true", help="skip PostgreSQL")
    parser.add_argument(
        "--large-messages",
        type=int,
        default=200,
        help=f"messages of {LARGE / 1e6:g} MB for the large-message row, SQLite (0: none)",
    )
    parser.add_argument(
        "--processes", type=int, default=2, help="worker processes for the scale-out rows (0: none)"
    )
    args = parser.parse_args()
    for program in (SMTP_SINK, SMTP_SOURCE):
        if not Path(program).exists():
            raise SystemExit(f"{program} is missing: install Debian's postfix package")
    results = Results()
    sink = Sink()
    try:
        with tempfile.TemporaryDirectory(prefix="mc-bench-") as directory:
            base = Path(directory)
            first = anchor(sink, args.messages, args.sessions)
            results.rows.append(first)
            results.rows.append(baseline(sink, args.messages))
            results.rows.append(smtp_floor(sink, args.messages, args.sessions))
            url = f"sqlite:///{base / 'sqlite' / 'mailconnect.db'}"
            row, rate = end_to_end(
                sink, "SQLite", url, base / "sqlite", args.messages, args.sessions
            )
            results.rows.append(row)
            results.enqueue["SQLite"] = rate
            results.rows.append(side_by_side(sink, base / "side", args.messages, args.sessions))
            results.rows.append(
                records_floor(
                    "SQLite", f"sqlite:///{base / 'floor' / 'm.db'}", base / "floor", args.messages
                )
            )
            (base / "both").mkdir()
            results.rows.append(both_floor(sink, base / "both", args.messages, args.sessions))
            if args.large_messages > 0:
                url = f"sqlite:///{base / 'large' / 'mailconnect.db'}"
                row, _ = end_to_end(
                    sink, "SQLite", url, base / "large", args.large_messages, args.sessions, LARGE
                )
                results.rows.append(row)
            if not args.no_postgres:
                with postgres_database() as postgres:
                    if postgres is not None:
                        row, rate = end_to_end(
                            sink, "PostgreSQL", postgres, base / "pg", args.messages, args.sessions
                        )
                        results.rows.append(row)
                        results.enqueue["PostgreSQL"] = rate
                with postgres_database() as postgres:
                    if postgres is not None:
                        results.rows.append(
                            side_by_side(
                                sink, base / "side-pg", args.messages, args.sessions, postgres
                            )
                        )
                with postgres_database() as postgres:
                    if postgres is not None:
                        results.rows.append(
                            records_floor("PostgreSQL", postgres, base / "floor-pg", args.messages)
                        )
            row, results.memory_mb, results.peak_sessions = workers(
                sink, base / "memory", args.messages, args.memory_sessions
            )
            results.memory_sessions = args.memory_sessions
            results.rows.append(row)
            if args.processes > 0:
                row, _, _ = workers(
                    sink, base / "processes", args.messages, args.sessions, args.processes
                )
                results.rows.append(row)
            if args.processes > 0 and not args.no_postgres:
                with postgres_database() as postgres:
                    if postgres is not None:
                        row, _, _ = workers(
                            sink,
                            base / "processes-pg",
                            args.messages,
                            args.sessions,
                            args.processes,
                            postgres,
                        )
                        results.rows.append(row)
    finally:
        sink.stop()
    report(results, first.rate, args)


if __name__ == "__main__":
    main()
