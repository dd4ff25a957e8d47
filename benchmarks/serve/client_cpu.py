"""CPU per member call of HTTP clients, side by side in one run: ``aiohttp`` (what the ``openai`` backend
uses), ``httpx``, the ``openai`` SDK, and the former hand-rolled ``lmfuse.backends.http1`` client when it
is importable (it was removed once aiohttp was measured against it).

One member (``lmfuse serve`` over a ``scripted`` backend, no added latency) runs in its own process, so
only the client's CPU is counted: ``time.process_time()`` of this process over ``--calls`` chat calls
with ``--concurrency`` in flight, each reply's JSON parsed. Clients take turns for ``--rounds`` rounds
(interleaved, so a change in the shared machine's load hits all of them alike); the median per round is
reported, with its ratio to aiohttp.

    PYTHONPATH=src .venv/bin/python benchmarks/serve/client_cpu.py            # ~1 min
    PYTHONPATH=src .venv/bin/python benchmarks/serve/client_cpu.py --calls 50 --rounds 1   # seconds
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import start  # noqa: E402


def member_config(reply: str, latency: float) -> str:
    """``lmfuse serve`` over a scripted backend answering ``reply`` after ``latency`` seconds."""
    return (f"backends:\n  s: {{kind: scripted, replies: {{m: {json.dumps(reply)}}}, delay: {latency}}}\n"
            "models:\n  m: {method: single, backend: s}\n"
            "server: {limits: {max_concurrency: 1024, max_queue: 4096}}\n")  # fmt: skip


BODY = {"model": "m", "messages": [{"role": "user", "content": "What is 6*7?"}], "max_tokens": 16}
Call = Callable[[], Awaitable[str]]


async def _aiohttp(url: str) -> tuple[Call, Callable[[], Awaitable[None]]]:
    import aiohttp

    session = aiohttp.ClientSession(
        headers={"Authorization": "Bearer EMPTY"}, auto_decompress=False,
        skip_auto_headers=("User-Agent", "Accept-Encoding"), timeout=aiohttp.ClientTimeout(total=None),
    )  # fmt: skip
    payload = json.dumps(BODY).encode()

    async def call() -> str:
        async with session.post(f"{url}/chat/completions", data=payload,
                                headers={"Content-Type": "application/json"}) as resp:  # fmt: skip
            return json.loads(await resp.read())["choices"][0]["message"]["content"]

    return call, session.close


async def _httpx(url: str) -> tuple[Call, Callable[[], Awaitable[None]]]:
    import httpx

    client = httpx.AsyncClient(base_url=url + "/", headers={"Authorization": "Bearer EMPTY"})
    payload = json.dumps(BODY).encode()

    async def call() -> str:
        resp = await client.post(
            "chat/completions", content=payload, headers={"Content-Type": "application/json"}
        )
        return json.loads(resp.content)["choices"][0]["message"]["content"]

    return call, client.aclose


async def _openai(url: str) -> tuple[Call, Callable[[], Awaitable[None]]]:
    import openai

    client = openai.AsyncOpenAI(base_url=url, api_key="EMPTY", max_retries=0)

    async def call() -> str:
        out = await client.chat.completions.create(**BODY)
        return out.choices[0].message.content or ""

    return call, client.close


async def _http1(url: str) -> tuple[Call, Callable[[], Awaitable[None]]]:
    from lmfuse.backends.http1 import Pool  # removed from lmfuse: only while it existed

    pool = Pool(url, {"Authorization": "Bearer EMPTY"})
    payload = json.dumps(BODY).encode()

    async def call() -> str:
        resp = await pool.post("chat/completions", payload)
        return json.loads(resp.content)["choices"][0]["message"]["content"]

    return call, pool.aclose


CLIENTS = {"aiohttp": _aiohttp, "httpx": _httpx, "openai SDK": _openai, "http1 (old)": _http1}


async def _measure(call: Call, calls: int, concurrency: int) -> float:
    """CPU ms per call (this process) over ``calls`` calls, ``concurrency`` in flight."""
    left = calls

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            assert await call() == "42"

    await asyncio.gather(*(worker() for _ in range(min(concurrency, calls))))  # warm connections
    left = calls
    t0 = time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return (time.process_time() - t0) * 1000 / calls


async def main_async(args: argparse.Namespace) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start(member_config("42", 0.0), Path(tmp), "member")
        try:
            clients = {}
            for name, make in CLIENTS.items():
                try:
                    clients[name] = await make(url)
                except ImportError:
                    print(f"{name}: not importable, skipped", file=sys.stderr)
            per: dict[str, list[float]] = {name: [] for name in clients}
            for _ in range(args.rounds):
                for name, (call, _) in clients.items():
                    per[name].append(await _measure(call, args.calls, args.concurrency))
            for _, close in clients.values():
                await close()
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    return {name: statistics.median(v) for name, v in per.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=400)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--concurrency", type=int, default=8)
    args = p.parse_args()
    result = asyncio.run(main_async(args))
    base = result["aiohttp"]
    print(f"| client | CPU ms per call (median of {args.rounds} rounds x {args.calls} calls) | vs aiohttp |")
    print("|---|---|---|")
    for name, ms in result.items():
        print(f"| {name} | {ms:.3f} | {ms / base:.2f}x |")


if __name__ == "__main__":
    main()
