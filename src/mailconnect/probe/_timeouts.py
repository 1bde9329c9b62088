"""Time limits of a connection test: one per step, and one for the whole test."""

from __future__ import annotations

import time
from dataclasses import dataclass

from mailconnect.diagnosis import Failure, Stage
from mailconnect.settings import parse_seconds
from mailconnect.smtp import SessionError

__all__ = ["Deadline", "Timeouts"]

MAX_SECONDS = 300.0


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds: ``connect`` for the TCP connection, ``step`` for the greeting, the TLS handshake
    and each command's reply, ``data`` for the reply to a test message, ``total`` for the test.
    """

    connect: float = 10.0
    step: float = 10.0
    data: float = 60.0
    total: float = 60.0

    def __post_init__(self) -> None:
        for name in ("connect", "step", "data", "total"):
            parse_seconds(getattr(self, name), "timeout", MAX_SECONDS)

    @classmethod
    def per_step(cls, seconds: float) -> Timeouts:
        """``seconds`` for every step; the whole test may take four steps' worth, at least 60 s."""
        seconds = parse_seconds(seconds, "timeout", MAX_SECONDS)
        return cls(
            connect=seconds,
            step=seconds,
            data=max(seconds, 60.0),
            total=min(MAX_SECONDS, max(60.0, 4 * seconds)),
        )


class Deadline:
    """The test's total time limit, shared by its steps."""

    def __init__(self, total: float) -> None:
        self.total = total
        self._end = time.monotonic() + total

    def remaining(self) -> float:
        return self._end - time.monotonic()

    def budget(self, wanted: float, stage: Stage) -> float:
        """``wanted`` seconds, or what is left of the total; raises SessionError when nothing is."""
        remaining = self.remaining()
        if remaining <= 0:
            raise SessionError(
                stage,
                failure=Failure.TIMEOUT,
                detail=f"the test's time limit of {self.total:g} s ran out",
            )
        return min(wanted, remaining)
