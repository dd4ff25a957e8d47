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


def test_member_key_never_in_errors_or_log_records(monkeypatch, caplog):
    """Every way a call can fail (HTTP 401, a hung server, a refused port; plain and streamed), with all
    loggers at DEBUG: the key is sent, and appears in no error message and no log record."""
    import logging
    import socket

    monkeypatch.setenv("LMFUSE_TEST_MEMBER_KEY", "sk-conn-secret-456")
    caplog.set_level(logging.DEBUG)

    async def go():
        seen = []

        async def reject(reader, writer):
            head = await reader.readuntil(b"\r\n\r\n")
            seen.append(head)
            writer.write(b"HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ncontent-length: 38\r\n\r\n"
                         b'{"error": {"message": "bad api key"}}\n')  # fmt: skip
            await writer.drain()
            writer.close()

        async def hang(reader, writer):
            await reader.readuntil(b"\r\n\r\n")
            await asyncio.sleep(5)

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            refused = s.getsockname()[1]
        servers = [await asyncio.start_server(h, "127.0.0.1", 0) for h in (reject, hang)]
        ports = [srv.sockets[0].getsockname()[1] for srv in servers] + [refused]
        errors = []
        for port in ports:
            backend = OpenAIBackend(f"http://127.0.0.1:{port}/v1", model="m", max_retries=0, timeout=0.5,
                                    api_key_env="LMFUSE_TEST_MEMBER_KEY")  # fmt: skip
            req = Request(messages=[{"role": "user", "content": "hi"}])
            (reply,) = await backend.generate([req])
            streamed = [x async for x in backend.stream(req)]
            errors += [reply.error, streamed[-1].error]
            await backend.aclose()
        for srv in servers:
            srv.close()
        return errors, seen

    errors, seen = asyncio.run(go())
    assert b"Bearer sk-conn-secret-456" in seen[0]  # the key was sent
    assert errors[:2] == ["HTTP 401: bad api key"] * 2 and errors[2:4] == ["timed out"] * 2
    assert all(e.startswith("connection failed") for e in errors[4:]), errors
    assert not any("sk-conn-secret-456" in e for e in errors)
    assert "sk-conn-secret-456" not in caplog.text
    assert not any("sk-conn-secret-456" in str(r.args) for r in caplog.records)
