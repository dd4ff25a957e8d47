"""Where a fused request's CPU goes inside ``lmfuse serve``: the app called in-process (no inbound
HTTP), ``time.process_time`` per request, 8 requests in flight, on uvloop:

1. ``single`` over an in-process scripted backend: the HTTP layer (body validation, routing, response);
2. ``vote`` over three in-process scripted members: + the fusion (requests, records, vote, envelope);
3. ``vote`` over three lean member processes (``lean.py``, no added latency): + three member calls over
   aiohttp, as the load test makes them.

The full server adds the inbound HTTP (uvicorn, httptools, the sockets) on top of part 3; the load test
(``run.py``) measures that whole as the server's CPU per request. Parts run interleaved, median of
``--rounds``.

    PYTHONPATH=src .venv/bin/python benchmarks/serve/cpu_parts.py --requests 2000 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lean  # noqa: E402
import run as bench  # noqa: E402

REPLIES = ["The answer is 42.", "I get 42 as the answer.", "The answer is 41."]
VOTE = {"method": "vote", "members": ["m0", "m1", "m2"], "similarity": "answer", "quorum": 2, "timeout": 5}


def _app(config: dict):
    from lmfuse.serve.app import create_app
    from lmfuse.serve.build import build_models, server_options
    from lmfuse.serve.config import parse

    cfg = parse(config)
    return create_app(build_models(cfg), options=server_options(cfg))


def _scope(length: int) -> dict:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
            "scheme": "http", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
            "query_string": b"", "root_path": "", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2),
            "headers": [(b"host", b"x"), (b"content-type", b"application/json"),
                        (b"content-length", str(length).encode())]}  # fmt: skip


async def per_request(app, model: str, n: int, in_flight: int = 8) -> float:
    """CPU ms per chat request to ``model`` through the ASGI ``app``."""
    body = json.dumps({"model": model, "messages": bench.USER, "max_tokens": 16, "temperature": 0}).encode()
    scope = _scope(len(body))

    async def one() -> None:
        sent: list[dict] = []

        async def receive() -> dict:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict) -> None:
            sent.append(message)

        await app(dict(scope), receive, send)
        assert sent[0]["status"] == 200, sent

    async def worker(k: int) -> None:
        for _ in range(k):
            await one()

    await worker(50)  # warm
    start = time.process_time()
    await asyncio.gather(*(worker(n // in_flight) for _ in range(in_flight)))
    return 1000 * (time.process_time() - start) / (n // in_flight * in_flight)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    members = [bench.spawn_member(r, 0.0) for r in REPLIES]
    try:
        for i, (p, _) in enumerate(members):
            bench.member_ready(p, f"member {i}")
        scripted = {f"m{i}": {"kind": "scripted", "replies": {f"m{i}": r}} for i, r in enumerate(REPLIES)}
        remote = {f"m{i}": {"kind": "openai", "base_url": u, "model": "m", "max_retries": 0, "timeout": 5,
                            "max_concurrency": 64} for i, (_, u) in enumerate(members)}  # fmt: skip
        parts = {
            "single, in-process scripted backend": (_app({"backends": scripted, "models": {"m0": {"method": "single", "backend": "m0"}}}), "m0"),
            "vote, 3 in-process scripted members": (_app({"backends": scripted, "models": {"v": VOTE}}), "v"),
            "vote, 3 member processes over aiohttp": (_app({"backends": remote, "models": {"v": VOTE}}), "v"),
        }  # fmt: skip
        times: dict[str, list[float]] = {k: [] for k in parts}

        async def go() -> None:
            for _ in range(args.rounds):
                for name, (app, model) in parts.items():
                    times[name].append(await per_request(app, model, args.requests))

        lean.run(go())
    finally:
        for p, _ in members:
            p.kill()
            p.wait()
    out = {k: round(statistics.median(v), 3) for k, v in times.items()}
    for k, v in out.items():
        print(f"{k}: {v} ms CPU per request")
    return out


if __name__ == "__main__":
    main()
