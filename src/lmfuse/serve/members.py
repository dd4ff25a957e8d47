"""Member calls as the fusions make them: a per-call timeout, a record of every call (for usage and the
``lmfuse`` field), and a tap that streams one chosen call (the MoA aggregator) as it is generated.

``Recorded`` wraps a shared backend for one request, so a method's public API (``MoA``, ``EoT``) can be
given these wrappers as its backends and the server still sees every call and its reply.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from lmfuse.backends.base import Backend, Reply, Request


async def stream_reply(backend: Backend, request: Request) -> AsyncIterator[str | Reply]:
    """Text deltas then the ``Reply``: streamed by backends that can, else one delta."""
    if hasattr(backend, "stream"):
        async for piece in backend.stream(request):  # type: ignore[attr-defined]
            yield piece
        return
    reply = (await backend.generate([request]))[0]
    if reply.ok and reply.text:
        yield reply.text
    yield reply


def member_seed(seed: int | None, *who: object) -> int | None:
    """The seed of one member call of a request seeded with ``seed``, from ``who`` asks (member, round):
    members sample independently of each other, and the same request gets the same seeds again."""
    if seed is None:
        return None
    digest = hashlib.blake2b(repr((seed, *who)).encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") & 0x7FFFFFFF


class Recorded:
    """``backend`` with a ``timeout`` per call; every ``(member, request, reply)`` lands in ``calls``.
    ``tap(request)`` → a callback taking each text delta: that call is streamed through it.
    ``adjust(request)`` → the request actually sent (the request's own sampling settings)."""

    def __init__(self, backend: Backend, member: Callable[[Request], str], timeout: float,
                 calls: list, tap: Callable[[Request], Callable[[str], None] | None] | None = None,
                 adjust: Callable[[Request], Request] | None = None) -> None:  # fmt: skip
        self.backend, self.member, self.timeout, self.calls, self.tap = backend, member, timeout, calls, tap
        self.adjust = adjust
        self.name = backend.name

    async def generate(self, requests: Sequence[Request]) -> list[Reply]:
        if len(requests) == 1:  # no task for a lone call
            return [await self.one(requests[0])]
        return list(await asyncio.gather(*(self.one(r) for r in requests)))

    async def one(self, request: Request) -> Reply:
        start = time.perf_counter()
        if self.adjust is not None:
            request = self.adjust(request)
        sink = self.tap(request) if self.tap else None
        try:
            async with asyncio.timeout(self.timeout):
                if sink is None:
                    reply = (await self.backend.generate([request]))[0]
                else:
                    reply = Reply(error="stream ended without a reply")
                    async for piece in stream_reply(self.backend, request):
                        if isinstance(piece, Reply):
                            reply = piece
                        else:
                            sink(piece)
        except TimeoutError:
            reply = Reply(error=f"timed out after {self.timeout:g} s", seconds=time.perf_counter() - start)
        self.calls.append((self.member(request), request, reply))
        return reply

    async def aclose(self) -> None:
        return None  # the shared backend outlives this request


def usage_of(calls: list[tuple[str, Request, Reply]]) -> tuple[int, int, list[dict[str, Any]]]:
    """Summed prompt and completion tokens of every call, and each call as the ``lmfuse`` field lists it."""
    rows = []
    for member, _, r in calls:
        row: dict[str, Any] = {"member": member, "prompt_tokens": r.prompt_tokens,
                               "completion_tokens": r.completion_tokens, "seconds": round(r.seconds, 4)}  # fmt: skip
        if not r.ok:
            row["error"] = r.error
        rows.append(row)
    return sum(r.prompt_tokens for *_, r in calls), sum(r.completion_tokens for *_, r in calls), rows


def split(
    calls: list[tuple[str, Request, Reply]], names: Sequence[str]
) -> tuple[list[str], list[dict[str, str]]]:
    """Members that answered at least once, and the others with their first error."""
    ok = [n for n in names if any(m == n and r.ok for m, _, r in calls)]
    failed = []
    for n in names:
        if n not in ok:
            err = next((r.error for m, _, r in calls if m == n and not r.ok), "not called")
            failed.append({"member": n, "error": err or "failed"})
    return ok, failed
