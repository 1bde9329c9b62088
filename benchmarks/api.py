"""Throughput and latency of POST /v1/messages (single and bulk) against the library's enqueue.

    .venv/bin/python benchmarks/api.py [--count N] [--bulk-size N] [--concurrency N]
                                       [--seconds S] [--databases sqlite,postgresql]

For each database (SQLite in a temporary directory; PostgreSQL at MAILCONNECT_TEST_POSTGRES_URL or
postgresql://postgres@127.0.0.1:5432/test, in a fresh database, when it answers) it starts the real
service (`python -m mailconnect.service --port 0 --workers 0`: API only, so that no worker
competes for the CPU or the database), makes a tenant, a key and a connection through the API,
then measures, in the same run and on the same database:

- library single: ``enqueue()`` called one message at a time from this process, in a loop;
- HTTP single: ``POST /v1/messages`` from an httpx async load generator on loopback with
  ``--concurrency`` requests in flight;
- library bulk and HTTP bulk: ``enqueue_many`` / ``POST /v1/messages/bulk`` with
  ``--bulk-size`` messages per call.

Each phase stops after ``--count`` messages or ``--seconds``, whichever comes first. Reports
messages per second and p50/p99 latency per call, and the ratio HTTP / library for single
messages (the goal: at least 50 %). Every message is durable (committed) before its call returns.
For HTTP single it also prints the CPU the service process and the load generator used per
message (the service's from /proc): both share the machine's CPUs, so the ratio depends on what
else runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from mailconnect.compose import MessageInput
from mailconnect.config import load_config
from mailconnect.outbox import Outbox, enqueue, enqueue_many

TOKEN = secrets.token_urlsafe(32)  # the operator token of the service under test
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
TEXT = "Thank you for applying. We will get back to you within two weeks. " * 8


@dataclass
class Result:
    name: str
    messages: int
    calls: int
    seconds: float
    latencies_ms: list[float]
    client_cpu: float = 0.0  # CPU seconds the load generator used (HTTP cases)
    server_cpu: float | None = None  # CPU seconds the service process used (HTTP cases, Linux)

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0

    def percentile(self, fraction: float) -> float:
        if not self.latencies_ms:
            return 0.0
        ordered = sorted(self.latencies_ms)
        index = min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))
        return ordered[index]


def _body(index: int) -> dict[str, Any]:
    return {
        "from": "jobs@acme.com",
        "to": [f"candidate{index}@example.org"],
        "subject": f"Your application {index}",
        "text": TEXT,
    }


def _message(index: int) -> MessageInput:
    return MessageInput(
        from_="jobs@acme.com",
        to=[f"candidate{index}@example.org"],
        subject=f"Your application {index}",
        text=TEXT,
    )


# --- the service --------------------------------------------------------------------------------


def process_cpu(pid: int) -> float | None:
    """CPU seconds (user + system) the process has used so far; None where /proc is missing."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def running_service(database_url: str, data_dir: Path) -> Iterator[tuple[str, int]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILCONNECT_")}
    env.update(
        {
            "MAILCONNECT_DATA_DIR": str(data_dir),
            "MAILCONNECT_DATABASE_URL": database_url,
            "MAILCONNECT_OPERATOR_TOKEN": TOKEN,
            "MAILCONNECT_LOG_LEVEL": "warning",
        }
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "mailconnect.service", "--port", "0", "--workers", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        if not first.startswith("mailconnect listening on "):
            raise RuntimeError(f"the service did not start: {first!r}")
        url = first.removeprefix("mailconnect listening on ").strip()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            time.sleep(0.1)
        yield url, process.pid
    finally:
        process.terminate()
        process.wait(timeout=30)


def _set_up(url: str) -> tuple[uuid.UUID, str, str]:
    """A tenant, an API key and a connection, made through the API."""
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}) as operator:
        tenant = operator.post(
            "/v1/tenants", json={"external_id": f"bench-{secrets.token_hex(3)}", "name": "Bench"}
        ).json()
        key = operator.post(f"/v1/tenants/{tenant['id']}/keys", json={"name": "bench"}).json()
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key['key']}"}) as client:
        connection = client.post(
            "/v1/connections",
            json={
                "name": "jobs",
                "host": "smtp.acme.com",
                "port": 587,
                "security": "starttls",
                "username": "jobs@acme.com",
                "password": "benchmark-password",
                "sender": {"address": "jobs@acme.com"},
            },
        ).json()
    return uuid.UUID(tenant["id"]), key["key"], connection["id"]


# --- the phases ---------------------------------------------------------------------------------


def library_single(outbox: Outbox, tenant: uuid.UUID, count: int, seconds: float) -> Result:
    latencies: list[float] = []
    started = time.perf_counter()
    done = 0
    while done < count and time.perf_counter() - started < seconds:
        t0 = time.perf_counter()
        enqueue(outbox, tenant_id=tenant, message=_message(done))
        latencies.append((time.perf_counter() - t0) * 1000)
        done += 1
    return Result("library single", done, done, time.perf_counter() - started, latencies)


def library_bulk(
    outbox: Outbox, tenant: uuid.UUID, count: int, size: int, seconds: float
) -> Result:
    latencies: list[float] = []
    started = time.perf_counter()
    done = calls = 0
    while done < count and time.perf_counter() - started < seconds:
        t0 = time.perf_counter()
        enqueue_many(outbox, tenant_id=tenant, messages=[_message(done + i) for i in range(size)])
        latencies.append((time.perf_counter() - t0) * 1000)
        done += size
        calls += 1
    return Result("library bulk", done, calls, time.perf_counter() - started, latencies)


async def _http(
    url: str,
    key: str,
    name: str,
    count: int,
    seconds: float,
    concurrency: int,
    request: Callable[[httpx.AsyncClient, int], Any],
    per_call: int,
) -> Result:
    latencies: list[float] = []
    next_index = 0
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {key}"}, limits=limits, timeout=60
    ) as client:

        async def loop() -> None:
            nonlocal next_index
            while next_index < count and time.perf_counter() < deadline:
                index = next_index
                next_index += per_call
                t0 = time.perf_counter()
                response = await request(client, index)
                if response.status_code != 202:
                    raise RuntimeError(f"{name}: {response.status_code} {response.text[:200]}")
                latencies.append((time.perf_counter() - t0) * 1000)

        started = time.perf_counter()
        cpu = time.process_time()
        await asyncio.gather(*(loop() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu
    calls = len(latencies)
    return Result(name, calls * per_call, calls, elapsed, latencies, cpu)


def http_single(url: str, key: str, count: int, seconds: float, concurrency: int) -> Result:
    async def one(client: httpx.AsyncClient, index: int) -> httpx.Response:
        return await client.post("/v1/messages", json=_body(index))

    return asyncio.run(_http(url, key, "HTTP single", count, seconds, concurrency, one, 1))


def http_bulk(
    url: str, key: str, count: int, size: int, seconds: float, concurrency: int
) -> Result:
    async def many(client: httpx.AsyncClient, index: int) -> httpx.Response:
        body = {"messages": [_body(index + i) for i in range(size)]}
        return await client.post("/v1/messages/bulk", json=body)

    return asyncio.run(_http(url, key, "HTTP bulk", count, seconds, concurrency, many, size))


# --- databases ----------------------------------------------------------------------------------


@contextlib.contextmanager
def database(kind: str, directory: Path) -> Iterator[str | None]:
    if kind == "sqlite":
        yield f"sqlite:///{directory / 'mailconnect.db'}"
        return
    server = make_url(os.environ.get("MAILCONNECT_TEST_POSTGRES_URL") or DEFAULT_POSTGRES)
    conninfo = server.set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"mailconnect_bench_{secrets.token_hex(4)}"
    try:
        admin = psycopg.connect(conninfo, autocommit=True, connect_timeout=3)
    except psycopg.Error:
        yield None
        return
    with admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield server.set(database=name).render_as_string(hide_password=False)
        finally:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def run(kind: str, args: argparse.Namespace) -> list[Result] | None:
    with (
        tempfile.TemporaryDirectory(prefix="mc-bench-") as temporary,
        database(kind, Path(temporary)) as url,
    ):
        if url is None:
            print(f"{kind}: no server answers; skipped")
            return None
        data_dir = Path(temporary) / "data"
        with running_service(url, data_dir) as (service, pid):
            tenant, key, _connection = _set_up(service)
            config = load_config(data_dir=data_dir, database_url=url)
            outbox = Outbox.open(config)

            def measured(phase: Callable[[], Result]) -> Result:
                """``phase`` with the service's CPU time (a diagnostic, read from /proc)."""
                before = process_cpu(pid)
                result = phase()
                after = process_cpu(pid)
                if before is not None and after is not None:
                    result.server_cpu = after - before
                return result

            try:
                results = [
                    library_single(outbox, tenant, args.count, args.seconds),
                    measured(
                        lambda: http_single(
                            service, key, args.count, args.seconds, args.concurrency
                        )
                    ),
                    library_bulk(outbox, tenant, args.count * 5, args.bulk_size, args.seconds),
                    http_bulk(
                        service,
                        key,
                        args.count * 5,
                        args.bulk_size,
                        args.seconds,
                        max(1, args.concurrency // 4),
                    ),
                ]
            finally:
                outbox.close()
    return results


def report(kind: str, results: list[Result]) -> None:
    print(f"\n{kind}")
    print(f"  {'case':<16} {'messages/s':>11} {'calls':>7} {'p50 ms':>8} {'p99 ms':>8}")
    for r in results:
        print(
            f"  {r.name:<16} {r.rate:>11.0f} {r.calls:>7} "
            f"{r.percentile(0.5):>8.2f} {r.percentile(0.99):>8.2f}"
        )
    library, http = results[0], results[1]
    ratio = http.rate / library.rate if library.rate else 0.0
    verdict = "ok" if ratio >= 0.5 else "BELOW the 50 % goal"
    print(f"  HTTP single / library single: {ratio:.0%} ({verdict})")
    bulk_ratio = results[3].rate / results[2].rate if results[2].rate else 0.0
    print(f"  HTTP bulk / library bulk: {bulk_ratio:.0%}")
    median = statistics.median(results[1].latencies_ms) if results[1].latencies_ms else 0.0
    busy = results[1].client_cpu / results[1].seconds if results[1].seconds else 0.0
    print(
        f"  (HTTP single median {median:.2f} ms with {results[1].calls} calls; "
        f"the load generator used {busy:.0%} of a core)"
    )
    single = results[1]
    if single.server_cpu is not None and single.messages and single.seconds:
        print(
            f"  (HTTP single: the service used {single.server_cpu / single.messages * 1e6:.0f} µs "
            f"of CPU per message, {single.server_cpu / single.seconds:.0%} of a core; "
            f"the load generator {single.client_cpu / single.messages * 1e6:.0f} µs)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000, help="messages per single phase")
    parser.add_argument("--bulk-size", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0, help="time limit per phase")
    parser.add_argument("--databases", default="sqlite,postgresql")
    args = parser.parse_args()
    for kind in args.databases.split(","):
        results = run(kind.strip(), args)
        if results is not None:
            report(kind.strip(), results)


if __name__ == "__main__":
    main()
