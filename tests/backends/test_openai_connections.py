"""The ``openai`` backend's pooled connections (one ``aiohttp`` session per event loop) against a raw
asyncio server on 127.0.0.1: chunked bodies; a server that drops every connection after one reply (each
kept-alive connection is stale when reused) still answers every call; a server that keeps connections
open serves sequential calls over one connection."""

from __future__ import annotations

import asyncio
import json

from lmfuse.backends.base import Request
from lmfuse.backends.openai_api import OpenAIBackend


def _reply(text: str) -> bytes:
    body = json.dumps({"choices": [{"message": {"content": text}, "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": 1, "completion_tokens": 2}}).encode()  # fmt: skip
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (body[:10], body[10:]))
    return (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
        + chunks
        + b"0\r\n\r\n"
    )


def test_chunked_bodies_and_connections_closed_by_the_server():
    async def go():
        served = []

        async def handle(reader, writer):
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(
                next(
                    line.split(b":")[1]
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                )
            )
            body = json.loads(await reader.readexactly(length))
            served.append(body["messages"][0]["content"])
            writer.write(_reply(f"re: {body['messages'][0]['content']}"))
            await writer.drain()
            writer.close()  # no "connection: close" header: the client finds out on reuse

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        backend = OpenAIBackend(f"http://127.0.0.1:{port}/v1", model="m", max_retries=0)
        try:
            out = []
            for i in range(4):
                out += await backend.generate([Request(messages=[{"role": "user", "content": f"q{i}"}])])
        finally:
            await backend.aclose()
            server.close()
        return out, served

    out, served = asyncio.run(go())
    assert [r.text for r in out] == ["re: q0", "re: q1", "re: q2", "re: q3"] and all(
        r.ok and r.attempts == 1 for r in out
    )
    assert served == ["q0", "q1", "q2", "q3"] and out[0].completion_tokens == 2


def test_sequential_calls_reuse_one_kept_alive_connection():
    async def go():
        connections = []

        async def handle(reader, writer):
            connections.append(writer)
            while head := await reader.readuntil(b"\r\n\r\n"):
                length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length"))  # fmt: skip
                await reader.readexactly(length)
                writer.write(_reply("ok"))
                await writer.drain()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        backend = OpenAIBackend(f"http://127.0.0.1:{port}/v1", model="m", max_retries=0)
        try:
            out = []
            for i in range(4):
                out += await backend.generate([Request(messages=[{"role": "user", "content": f"q{i}"}])])
        finally:
            await backend.aclose()
            for w in connections:
                w.close()
            server.close()
        return out, len(connections)

    out, n = asyncio.run(go())
    assert [r.text for r in out] == ["ok"] * 4 and n == 1
