"""Benchmark the connection test: its overhead over bare aiosmtplib, and auto mode's concurrency.

    .venv/bin/python benchmarks/probe.py [--iterations N] [--auto-rounds N] [--timeout S]

1. A full probe (resolve, connect, greeting, EHLO, STARTTLS, certificate, EHLO, AUTH PLAIN,
   MAIL FROM, RCPT TO, RSET, QUIT) against a loopback aiosmtpd server with STARTTLS and AUTH,
   versus the same commands as bare aiosmtplib calls on the same kind of pinned socket, N
   iterations each, interleaved. Goal: median overhead <= 20 %.
2. Auto mode over four endpoints (STARTTLS, implicit TLS, a closed port, and one that accepts
   but never greets, so it runs into its timeout): total time versus the slowest of the four
   probed alone. Goal: <= 1.2 x.

The servers run in a child process (this script with --serve), so that their CPU time does not
count against the client's. Everything stays on 127.0.0.1. Prints one table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiosmtplib
import trustme

from mailconnect.discovery import Candidate
from mailconnect.netguard import GuardPolicy
from mailconnect.probe import Timeouts, probe, probe_candidates
from mailconnect.settings import ConnectionSettings, Security
from mailconnect.smtp import TlsPolicy

HOST = "127.0.0.1"
USER = "jobs@acme.com"
PASSWORD = "bench-password-1"  # noqa: S105 - the benchmark server's own account


# --- the servers (child process) ----------------------------------------------------------------


async def _serve(cert_file: str) -> None:
    from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

    logging.getLogger("mail.log").setLevel(logging.ERROR)  # aiosmtpd's per-login deprecation note
    loop = asyncio.get_running_loop()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file)

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            return "250 OK"

    def authenticator(server: Any, session: Any, envelope: Any, mech: str, data: Any) -> Any:
        ok = isinstance(data, LoginPassword) and data.password.decode() == PASSWORD
        return AuthResult(success=ok, handled=False)

    def factory(starttls: bool) -> Callable[[], SMTP]:
        return lambda: SMTP(
            Handler(),
            hostname="bench.local",
            loop=loop,
            tls_context=context if starttls else None,
            require_starttls=starttls,
            auth_require_tls=starttls,
            authenticator=authenticator,
        )

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # never greets; waits for the client to give up
        writer.close()

    servers = [
        await loop.create_server(factory(True), HOST, 0),
        await loop.create_server(factory(False), HOST, 0, ssl=context),
        await asyncio.start_server(silent, HOST, 0),
    ]
    ports = [server.sockets[0].getsockname()[1] for server in servers]
    print(json.dumps({"starttls": ports[0], "tls": ports[1], "silent": ports[2]}), flush=True)
    await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes our stdin


# --- the client side ----------------------------------------------------------------------------


class _Localhost:
    """Resolves "localhost" to 127.0.0.1 without asking the system (a netguard Resolver)."""

    async def resolve(self, name: str) -> list[str]:
        return [HOST]


async def full_probe(settings: ConnectionSettings, ca_file: Path) -> None:
    """The probe; its settings are an input, made once, as the bare run's hostname is."""
    report = await probe(
        settings,
        password=PASSWORD,
        policy=GuardPolicy.off(),
        tls=TlsPolicy(ca_file=ca_file),
        resolver=_Localhost(),
        ehlo_name="[127.0.0.1]",
    )
    if not report.passed:
        raise RuntimeError(json.dumps(report.as_dict(), indent=2))


async def bare_aiosmtplib(port: int, context: ssl.SSLContext) -> None:
    """The same steps with aiosmtplib alone, on a socket connected to the address."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (HOST, port))
    smtp = aiosmtplib.SMTP(
        hostname="localhost",
        sock=sock,
        start_tls=False,
        tls_context=context,
        local_hostname="[127.0.0.1]",
        timeout=10,
    )
    await smtp.connect()
    await smtp.ehlo()
    await smtp.starttls()
    await smtp.ehlo()
    await smtp.auth_plain(USER, PASSWORD)
    await smtp.mail(USER)
    await smtp.rcpt(USER)
    await smtp.rset()
    await smtp.quit()


async def _timed(run: Callable[[], Awaitable[None]]) -> float:
    started = time.perf_counter()
    await run()
    return (time.perf_counter() - started) * 1000


def _p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10)[-1]


async def overhead(ports: dict[str, int], ca_file: Path, iterations: int) -> dict[str, list[float]]:
    context = ssl.create_default_context(cafile=str(ca_file))
    settings = ConnectionSettings.parse(
        host="localhost", port=ports["starttls"], security="starttls", username=USER
    )
    results: dict[str, list[float]] = {"bare": [], "probe": []}
    for _ in range(5):  # warm-up: imports, caches, TLS session setup
        await full_probe(settings, ca_file)
        await bare_aiosmtplib(ports["starttls"], context)
    runs: dict[str, Callable[[], Awaitable[None]]] = {
        "bare": lambda: bare_aiosmtplib(ports["starttls"], context),
        "probe": lambda: full_probe(settings, ca_file),
    }
    for index in range(iterations):
        # Alternate which goes first, so neither always follows the other's server clean-up.
        order = ("bare", "probe") if index % 2 == 0 else ("probe", "bare")
        for name in order:
            results[name].append(await _timed(runs[name]))
    return results


async def auto_mode(
    ports: dict[str, int], ca_file: Path, rounds: int, timeout: float
) -> tuple[list[float], list[float]]:
    with socket.socket() as closed:
        closed.bind((HOST, 0))
        closed_port = closed.getsockname()[1]
    candidates = [
        Candidate("localhost", ports["starttls"], Security.STARTTLS, ("bench",)),
        Candidate("localhost", ports["tls"], Security.TLS, ("bench",)),
        Candidate("localhost", closed_port, Security.STARTTLS, ("bench",)),
        Candidate("localhost", ports["silent"], Security.STARTTLS, ("bench",)),
    ]
    options: dict[str, Any] = {
        "password": PASSWORD,
        "policy": GuardPolicy.off(),
        "tls": TlsPolicy(ca_file=ca_file),
        "timeouts": Timeouts.per_step(timeout),
        "resolver": _Localhost(),
    }
    totals: list[float] = []
    slowest: list[float] = []
    for _ in range(rounds):
        alone = []
        for candidate in candidates:  # each endpoint probed by itself
            alone.append(
                await _timed(lambda c=candidate: _auto(USER, [c], options))  # type: ignore[misc]
            )
        slowest.append(max(alone))
        totals.append(await _timed(lambda: _auto(USER, candidates, options)))
    return totals, slowest


async def _auto(address: str, candidates: list[Candidate], options: dict[str, Any]) -> None:
    await probe_candidates(address, candidates=candidates, **options)


def _certificates(directory: Path) -> tuple[Path, Path]:
    ca = trustme.CA()
    ca_file, cert_file = directory / "ca.pem", directory / "server.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    ca.issue_cert("localhost", HOST).private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    return ca_file, cert_file


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--auto-rounds", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=1.0, help="per-step timeout in auto mode")
    parser.add_argument("--serve", metavar="CERT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(_serve(args.serve))
        return 0
    with tempfile.TemporaryDirectory(prefix="mc-bench-") as tmp:
        ca_file, cert_file = _certificates(Path(tmp))
        child = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(cert_file)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout is not None
            ports = json.loads(child.stdout.readline())
            runs = asyncio.run(overhead(ports, ca_file, args.iterations))
            totals, slowest = asyncio.run(auto_mode(ports, ca_file, args.auto_rounds, args.timeout))
        finally:
            if child.stdin:
                child.stdin.close()
            child.wait(timeout=10)
    bare, full = runs["bare"], runs["probe"]
    overhead_median = statistics.median(full) / statistics.median(bare) - 1
    overhead_p90 = _p90(full) / _p90(bare) - 1
    ratios = [total / slow for total, slow in zip(totals, slowest, strict=True)]
    rows = [
        (
            "bare aiosmtplib, same steps",
            f"{statistics.median(bare):.2f} ms",
            f"{_p90(bare):.2f} ms",
            "",
        ),
        (
            "mailconnect probe",
            f"{statistics.median(full):.2f} ms",
            f"{_p90(full):.2f} ms",
            f"overhead {overhead_median:+.1%} (p90 {overhead_p90:+.1%}); goal <= +20%",
        ),
        (
            "slowest single probe (silent)",
            f"{statistics.median(slowest):.0f} ms",
            f"{max(slowest):.0f} ms",
            f"per-step timeout {args.timeout:g} s",
        ),
        (
            "auto mode, 4 endpoints",
            f"{statistics.median(totals):.0f} ms",
            f"{max(totals):.0f} ms",
            f"{statistics.median(ratios):.2f} x slowest (max {max(ratios):.2f}); goal <= 1.2 x",
        ),
    ]
    header = ("", "median", "p90 / max", "")
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(4)]
    print(f"probe benchmark: {args.iterations} iterations each, {args.auto_rounds} auto rounds")
    for row in (header, *rows):
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
