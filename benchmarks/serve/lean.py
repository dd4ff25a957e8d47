"""The load test's harness, kept lean so that it is not what the test measures: a scripted
OpenAI-compatible member (a raw asyncio HTTP/1.1 server answering every chat completion after a fixed
latency) and a keep-alive load generator (one raw HTTP/1.1 connection per client). Both are test
harness, not product: they speak only the HTTP the test uses (Content-Length bodies, keep-alive).

    python benchmarks/serve/lean.py member --port 8101 --latency 0.05 --reply "The answer is 42."
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import time

try:
    import orjson

    loads = orjson.loads
except ImportError:  # pragma: no cover - orjson comes with the serve extra
    loads = json.loads


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:  # pragma: no cover
        return asyncio.new_event_loop()


def _content_length(head: bytes) -> int:
    at = head.lower().find(b"content-length:")
    if at < 0:
        return 0
    end = head.find(b"\r\n", at)
    return int(head[at + 15 : end if end >= 0 else None])


def member_response(reply: str) -> bytes:
    body = json.dumps({
        "id": "chatcmpl-lean", "object": "chat.completion", "created": 0, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 8, "completion_tokens": 6, "total_tokens": 14},
    }).encode()  # fmt: skip
    head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


class Member(asyncio.Protocol):
    """Every request on the connection is answered with ``response`` ``latency`` seconds after it
    arrived (requests on one connection are answered in order)."""

    def __init__(self, response: bytes, latency: float, counter: list[int]) -> None:
        self.response, self.latency, self.counter = response, latency, counter
        self.buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        loop = asyncio.get_running_loop()
        while (end := self.buf.find(b"\r\n\r\n")) >= 0:
            size = end + 4 + _content_length(self.buf[:end])
            if len(self.buf) < size:
                return
            self.buf = self.buf[size:]
            self.counter[0] += 1
            loop.call_later(self.latency, self._answer)

    def _answer(self) -> None:
        if not self.transport.is_closing():
            self.transport.write(self.response)


def serve_member(port: int, latency: float, reply: str) -> None:
    """Serve on 127.0.0.1:``port`` until killed; prints "ready" once listening."""
    loop = _new_loop()
    asyncio.set_event_loop(loop)
    response, counter = member_response(reply), [0]
    server = loop.run_until_complete(
        loop.create_server(lambda: Member(response, latency, counter), "127.0.0.1", port, backlog=1024)
    )
    print(f"member ready at http://127.0.0.1:{port}/v1", flush=True)
    try:
        loop.run_forever()
    finally:
        server.close()


class _Client(asyncio.Protocol):
    """One keep-alive connection; ``request(data)`` → ``(status, body)`` of the next response."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.waiter: asyncio.Future | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0 or self.waiter is None:
            return
        size = end + 4 + _content_length(bytes(self.buf[:end]))
        if len(self.buf) >= size:
            status, body = int(self.buf[9:12]), bytes(self.buf[end + 4 : size])
            del self.buf[:size]
            waiter, self.waiter = self.waiter, None
            if not waiter.done():
                waiter.set_result((status, body))

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection closed before the response"))

    def send(self, data: bytes) -> asyncio.Future:
        """Write one request; the future gets ``(status, body)`` of its response."""
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self.waiter

    async def request(self, data: bytes) -> tuple[int, bytes]:
        return await self.send(data)


def chat_request(host: str, port: int, model: str, messages: list[dict]) -> bytes:
    body = json.dumps({"model": model, "messages": messages, "max_tokens": 16, "temperature": 0}).encode()
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json"
            f"\r\nContent-Length: {len(body)}\r\n\r\n")  # fmt: skip
    return head.encode() + body


def classify(status: int, body: bytes, rec: dict) -> None:
    """``rec["kind"]``: ``answer`` (200 with text), ``error`` (an OpenAI-shaped error), else ``lost``."""
    try:
        data = loads(body)
    except ValueError:
        rec["kind"] = "lost"
        return
    if status == 200 and data["choices"][0]["message"]["content"]:
        rec["kind"] = "answer"
        info = data.get("lmfuse") or {}
        ok = [u["seconds"] for u in info.get("usage") or [] if "error" not in u]
        rec["slowest_member"] = max(ok) if ok else None
        rec["failed_members"] = len(info.get("failed") or [])
    elif status >= 400 and (data.get("error") or {}).get("message"):
        rec["kind"], rec["status"] = "error", status
    else:
        rec["kind"] = "lost"


def _hostport(url: str) -> tuple[str, int]:
    host, port = url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
    return host, int(port)


async def _clients(urls: list[str], clients: int, seconds: float, exchange, on_time=None) -> list[dict]:
    """``clients`` concurrent loops, each with one keep-alive connection to every URL in ``urls``,
    calling ``exchange(conns, rec)`` one request after another for ``seconds``; one record each."""
    loop = asyncio.get_running_loop()
    where = [_hostport(u) for u in urls]
    records: list[dict] = []
    end = time.perf_counter() + seconds

    async def one_client() -> None:
        conns: list[_Client] = []
        while (t0 := time.perf_counter()) < end:
            rec: dict = {"t": t0}
            try:
                if len(conns) < len(where) or any(c.transport is None for c in conns):
                    _close(conns)
                    conns = [(await loop.create_connection(_Client, h, p))[1] for h, p in where]
                async with asyncio.timeout(30):
                    await exchange(conns, rec)
                rec["latency"] = time.perf_counter() - t0
            except Exception as exc:  # a request with no clear outcome
                rec["kind"], rec["exc"] = "lost", type(exc).__name__
                rec["latency"] = time.perf_counter() - t0
                _close(conns)
                conns = []
            records.append(rec)
        _close(conns)

    tasks = [asyncio.ensure_future(one_client()) for _ in range(clients)]
    if on_time is not None:
        await on_time()
    await asyncio.gather(*tasks)
    return records


def _close(conns: list[_Client]) -> None:
    for c in conns:
        if c.transport is not None:
            c.transport.close()


async def drive(
    url: str, model: str, clients: int, seconds: float, messages: list[dict], on_time=None
) -> list[dict]:
    """``clients`` concurrent keep-alive clients sending one chat request to ``url`` after another for
    ``seconds``; one record per request (``t``, ``latency``, ``kind``, ...)."""
    data = chat_request(*_hostport(url), model, messages)

    async def exchange(conns: list[_Client], rec: dict) -> None:
        status, body = await conns[0].request(data)
        classify(status, body, rec)

    return await _clients([url], clients, seconds, exchange, on_time)


async def drive_fanout(
    urls: list[str], model: str, clients: int, seconds: float, messages: list[dict]
) -> list[dict]:
    """The ideal fusion at zero cost, as a baseline: each "request" sends the chat request to every
    member in ``urls`` at once (one connection each) and ends when all have answered. ``kind`` is
    ``answer`` when every member answered."""
    datas = [chat_request(*_hostport(u), model, messages) for u in urls]

    async def exchange(conns: list[_Client], rec: dict) -> None:
        futures = [c.send(d) for c, d in zip(conns, datas, strict=True)]
        kinds = []
        for f in futures:
            one: dict = {}
            classify(*(await f), one)
            kinds.append(one["kind"])
        rec["kind"] = "answer" if all(k == "answer" for k in kinds) else "lost"

    return await _clients(urls, clients, seconds, exchange)


def run(coro) -> object:
    """Run ``coro`` on a fresh (uvloop where installed) event loop."""
    loop = _new_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


def tree_cpu(pid: int) -> dict[int, float]:
    """``{pid: CPU seconds}`` of a process and of its live descendants (its worker processes)."""
    out, todo = {}, [pid]
    while todo:
        p = todo.pop(0)
        try:
            out[p] = cpu_seconds(p)
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo += [int(c) for c in f.read().split()]
        except (FileNotFoundError, ProcessLookupError):  # it ended meanwhile
            continue
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (``/proc/PID/stat``)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("member", help="a scripted OpenAI-compatible member")
    m.add_argument("--port", type=int, required=True)
    m.add_argument("--latency", type=float, default=0.05)
    m.add_argument("--reply", default="The answer is 42.")
    args = ap.parse_args()
    serve_member(args.port, args.latency, args.reply)


if __name__ == "__main__":
    main()
