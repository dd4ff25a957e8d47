"""A small HTTP/1.1 client for JSON POSTs to OpenAI-compatible servers: kept-alive connections pooled per
event loop, ``Content-Length`` and chunked bodies, TLS for ``https``. It exists for speed: a member call
through it costs a fraction of the CPU of a general client, which matters when a fused request makes
several calls (see benchmarks/serve). Streaming responses go through httpx instead.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class Response:
    status_code: int
    reason_phrase: str
    headers: dict[str, str]
    content: bytes


@dataclass
class Pool:
    """Idle connections to one ``base_url`` (for one event loop)."""

    base_url: str
    headers: dict[str, str]
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = field(default_factory=list)

    def __post_init__(self) -> None:
        u = urlsplit(self.base_url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"expected an http(s)://host[:port]/path base URL, found {self.base_url!r}")
        self.tls = u.scheme == "https"
        self.host, self.port = u.hostname, u.port or (443 if self.tls else 80)
        self.prefix = u.path.rstrip("/")
        host = self.host if u.port is None else f"{self.host}:{u.port}"
        extra = "".join(f"{k}: {v}\r\n" for k, v in self.headers.items())
        self.head = f"Host: {host}\r\nAccept: application/json\r\n{extra}"

    async def post(self, path: str, body: bytes) -> Response:
        """POST ``body`` (JSON) to ``base_url/path``; a kept-alive connection the server closed meanwhile
        is replaced once, transparently."""
        request = (f"POST {self.prefix}/{path} HTTP/1.1\r\n{self.head}Content-Type: application/json\r\n"
                   f"Content-Length: {len(body)}\r\n\r\n").encode() + body  # fmt: skip
        while self.idle:
            reader, writer = self.idle.pop()
            try:
                return await self._exchange(reader, writer, request)
            except (ConnectionError, asyncio.IncompleteReadError, _Stale):
                writer.close()
        reader, writer = await asyncio.open_connection(
            self.host, self.port, ssl=ssl.create_default_context() if self.tls else None
        )
        try:
            return await self._exchange(reader, writer, request)
        except _Stale as exc:
            raise ConnectionResetError("the server closed the connection without replying") from exc

    async def _exchange(self, reader, writer, request: bytes) -> Response:
        ok = False
        try:
            writer.write(request)
            await writer.drain()
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as exc:
                if not exc.partial:
                    raise _Stale from None
                raise
            lines = head.decode("latin-1").split("\r\n")
            version, status, *reason = lines[0].split(" ", 2)
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    k, v = line.split(":", 1)
                    headers[k.strip().lower()] = v.strip()
            body = await _body(reader, headers)
            keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
            ok = keep and ("content-length" in headers or headers.get("transfer-encoding") == "chunked")
            return Response(int(status), reason[0] if reason else "", headers, body)
        finally:
            if ok:
                self.idle.append((reader, writer))
            else:
                writer.close()

    async def aclose(self) -> None:
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()


class _Stale(Exception):
    """A kept-alive connection closed by the server before any byte of the reply."""


async def _body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if "content-length" in headers:
        return await reader.readexactly(int(headers["content-length"]))
    if headers.get("transfer-encoding", "").lower() == "chunked":
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return b"".join(parts)
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
    return await reader.read()  # until the server closes
