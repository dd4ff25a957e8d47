"""Bounded concurrency for the server: ``max_concurrency`` requests run at once, ``max_queue`` more
wait, and any further request is refused at once with 429 and ``Retry-After``; each request has a
``timeout``. Members' own timeouts and the quorum rule live in the fusions (``fusions.py``)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass


class QueueFull(Exception):
    """Every slot and every queue place is taken (429)."""


@dataclass
class Limits:
    max_concurrency: int = 64
    """Requests processed at once."""
    max_queue: int = 256
    """Requests waiting for a slot; beyond this, 429."""
    retry_after: float = 1.0
    """Seconds a refused client is told to wait (``Retry-After``)."""
    timeout: float = 600.0
    """Seconds one request may take in all (queue wait included), else 504."""

    def validate(self) -> list[str]:
        problems = []
        if self.max_concurrency < 1:
            problems.append(f"max_concurrency: expected >= 1, found {self.max_concurrency}")
        if self.max_queue < 0:
            problems.append(f"max_queue: expected >= 0, found {self.max_queue}")
        if self.retry_after < 0 or self.timeout <= 0:
            problems.append("retry_after must be >= 0 and timeout > 0")
        return problems


class Gate:
    """``async with gate.slot(): ...`` admits a request, queues it, or raises ``QueueFull``."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.admitted = 0
        """Requests running or waiting now."""
        self._sem: asyncio.Semaphore | None = None

    def slot(self) -> _Slot:
        if self.admitted >= self.limits.max_concurrency + self.limits.max_queue:
            raise QueueFull(
                f"server busy: {self.limits.max_concurrency} requests running and {self.limits.max_queue} "
                f"waiting; retry after {self.limits.retry_after:g} s"
            )
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.limits.max_concurrency)
        return _Slot(self, self._sem)


class _Slot:
    def __init__(self, gate: Gate, sem: asyncio.Semaphore) -> None:
        self.gate, self.sem = gate, sem
        gate.admitted += 1

    async def __aenter__(self) -> None:
        try:
            await self.sem.acquire()
        except BaseException:
            self.gate.admitted -= 1
            raise

    async def __aexit__(self, *exc: object) -> None:
        self.sem.release()
        self.gate.admitted -= 1
