"""Injected latency and failures for ``lmfuse serve``: for tests of retries and for benchmarks.

Requests are numbered in arrival order (1, 2, ...). With ``down`` every request gets 503. Otherwise the
first ``fail_first`` requests get HTTP ``fail_status`` (500, 429, ...), the next ``hang_first`` wait
``hang_seconds`` before being served (clients with a shorter timeout give up), and every request that is
served waits ``latency`` seconds first; concurrent requests wait at the same time, like a real server.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field


@dataclass
class Faults:
    latency: float = 0.0
    fail_first: int = 0
    fail_status: int = 500
    hang_first: int = 0
    hang_seconds: float = 30.0
    down: bool = False
    seen: int = field(default=0, init=False)
    """Requests received so far."""

    def validate(self) -> list[str]:
        problems = []
        if min(self.latency, self.hang_seconds) < 0 or min(self.fail_first, self.hang_first) < 0:
            problems.append("latency, hang_seconds, fail_first and hang_first must be >= 0")
        if not 400 <= self.fail_status <= 599:
            problems.append(f"fail_status: expected an HTTP error status 400-599, found {self.fail_status}")
        return problems

    async def apply(self) -> int | None:
        """Count this request; return an HTTP status to fail it with, or ``None`` after any delay."""
        self.seen += 1
        n = self.seen
        if self.down:
            return 503
        if n <= self.fail_first:
            return self.fail_status
        if n <= self.fail_first + self.hang_first:
            await asyncio.sleep(self.hang_seconds)
        if self.latency:
            await asyncio.sleep(self.latency)
        return None
