"""Delivery workers in their own processes, for the crash test (which kills them with SIGKILL).

    python tests/support/outbox_worker.py DATABASE_URL --key KEY [--concurrency N]
        [--lease SECONDS]

starts a *launcher*: it imports mailconnect once, then reads commands on stdin, one per line:

``start`` / ``start-once``
    fork a worker process and print its pid. ``start`` runs until killed; ``start-once``
    delivers what is due (uncertain messages included) and exits.
``wait PID``
    wait for that worker to end and print its exit status.

Forking after the imports makes a worker start in milliseconds, so a test can kill several at
random moments quickly. Nothing runs in the launcher before a fork (no engine, no event loop, no
thread); each child opens its own database connections. The network guard is off (the sink is
on loopback), the retry delays are tiny. Only mailconnect is imported, so this runs without the
test suite on ``sys.path``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from mailconnect.crypto import Keyring
from mailconnect.netguard import GuardPolicy
from mailconnect.outbox import Outbox, RetryPolicy, Timeouts, run_worker
from mailconnect.store import create_engine


def _work(args: argparse.Namespace, *, once: bool) -> None:
    outbox = Outbox(
        engine=create_engine(args.url),
        keyring=Keyring([args.key.encode()]),
        retry=RetryPolicy(first_delay=0.05, max_delay=0.2, jitter=0, release_delay=0),
        timeouts=Timeouts(connect=2, command=2, data=2),
        batch_size=20,
        poll_interval=0.1,
    )
    try:
        asyncio.run(
            run_worker(
                outbox,
                concurrency=args.concurrency,
                once=once,
                lease_seconds=args.lease,
                guard=GuardPolicy.off(),
                resend_uncertain=once,
            )
        )
    finally:
        outbox.close()


def _start(args: argparse.Namespace, *, once: bool) -> int:
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:  # the worker
        status = 0
        try:
            _work(args, once=once)
        except BaseException:
            status = 1
        finally:
            os._exit(status)
    return pid


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--key", required=True)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--lease", type=float, default=1.0)
    args = parser.parse_args()
    for line in sys.stdin:
        command, _, argument = line.strip().partition(" ")
        if command in ("start", "start-once"):
            print(_start(args, once=command == "start-once"), flush=True)
        elif command == "wait":
            _, status = os.waitpid(int(argument), 0)
            print(status, flush=True)
        elif command:
            print(f"unknown command {command!r}", flush=True)


if __name__ == "__main__":
    main()
