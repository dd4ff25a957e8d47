"""``openai``: any OpenAI-compatible server (vLLM, SGLang, llama.cpp, Ollama, hosted APIs, ``lmfuse serve``).

Async with at most ``max_concurrency`` calls in flight; each attempt has a ``timeout``; 429, 408, 5xx,
timeouts and connection errors are retried up to ``max_retries`` times with exponential backoff and jitter
(a server's ``Retry-After`` is honoured, capped at ``backoff_max``). Other HTTP errors (400, 401, 404)
fail at once. The API key is read from the environment variable ``api_key_env`` and is never put in
a message, a repr or a transcript.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from lmfuse.backends.base import Reply, Request
from lmfuse.errors import ConfigError

RETRY_STATUS = {408, 409, 429}

try:
    import orjson

    _dumps, _loads = orjson.dumps, orjson.loads
except ImportError:  # orjson comes with the serve extra

    def _dumps(obj: Any) -> bytes:
        return json.dumps(obj).encode()

    _loads = json.loads


class OpenAIBackend:
    """Calls ``base_url`` (``.../v1``) in the OpenAI wire format over one ``aiohttp.ClientSession`` per
    event loop (kept-alive pooled connections, TCP_NODELAY; no SDK per-call cost, see
    benchmarks/serve/client_cpu.py); retries are lmfuse's own."""

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        api_key_env: str | None = None,
        name: str = "openai",
        max_concurrency: int = 8,
        timeout: float = 60.0,
        max_retries: int = 3,
        backoff: float = 0.5,
        backoff_max: float = 8.0,
    ) -> None:
        if api_key_env is not None and not os.environ.get(api_key_env):
            raise ConfigError(
                f"backend {name!r}: environment variable {api_key_env} is not set; export it with your "
                f"API key, or drop api_key_env for a server without authentication"
            )
        self.name, self.base_url, self.model = name, base_url, model
        self.api_key_env = api_key_env
        self.max_concurrency, self.timeout = max_concurrency, timeout
        self.max_retries, self.backoff, self.backoff_max = max_retries, backoff, backoff_max
        self._loop_state: dict[int, tuple[asyncio.AbstractEventLoop, Any, asyncio.Semaphore]] = {}
        """``(loop, aiohttp.ClientSession, semaphore)`` per event loop (a session is bound to its loop)."""

    def __repr__(self) -> str:
        return f"OpenAIBackend(name={self.name!r}, base_url={self.base_url!r}, model={self.model!r})"

    def _state(self) -> tuple[Any, asyncio.Semaphore]:
        """The session and semaphore of the running event loop, made on first use."""
        import aiohttp

        loop = asyncio.get_running_loop()
        state = self._loop_state.get(id(loop))
        if state is None or state[0] is not loop:  # a new loop may reuse a closed one's id
            api_key = os.environ.get(self.api_key_env, "") if self.api_key_env else "EMPTY"
            session = aiohttp.ClientSession(
                headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
                connector=aiohttp.TCPConnector(limit=self.max_concurrency),
                timeout=aiohttp.ClientTimeout(total=None),  # per attempt: asyncio.timeout / sock_read
                auto_decompress=False, skip_auto_headers=("User-Agent", "Accept-Encoding"),
            )  # fmt: skip
            state = self._loop_state[id(loop)] = (loop, session, asyncio.Semaphore(self.max_concurrency))
        return state[1], state[2]

    def _url(self, req: Request) -> str:
        return f"{self.base_url.rstrip('/')}/{self._path(req)}"

    async def generate(self, requests: Sequence[Request]) -> list[Reply]:
        # each call its own task, also a lone one: the loop turn before it lets a connection the server
        # closed be noticed before it is reused (tests/backends/test_openai_connections.py)
        return list(await asyncio.gather(*(self._call(r) for r in requests)))

    async def _call(self, req: Request) -> Reply:
        client, sem = self._state()
        model = req.model or self.model
        if model is None:
            return Reply(error=f"backend {self.name!r}: no model name; set model: on the backend or agent")
        start, error = time.perf_counter(), ""
        for attempt in range(1, self.max_retries + 2):
            async with sem:
                try:
                    reply = await self._once(client, req, model)
                    reply.attempts, reply.seconds = attempt, time.perf_counter() - start
                    return reply
                except Exception as exc:
                    retry, error, wait = _classify(exc)
            if not retry or attempt > self.max_retries:
                break
            delay = min(self.backoff_max, wait if wait is not None else self.backoff * 2 ** (attempt - 1))
            await asyncio.sleep(delay * (1 + random.random() * 0.25))
        return Reply(error=error, attempts=attempt, seconds=time.perf_counter() - start)

    def _params(self, req: Request, model: str) -> dict[str, Any]:
        common: dict[str, Any] = {
            "model": model,
            "max_tokens": req.max_tokens,
            "temperature": req.temperature,
        }
        if req.stop:
            common["stop"] = req.stop
        if req.top_p != 1.0:
            common["top_p"] = req.top_p
        if req.seed is not None:
            common["seed"] = req.seed
        if req.messages is not None:
            common["messages"] = req.messages
        else:
            common["prompt"] = req.prompt if req.prompt is not None else req.prompt_ids
        return common

    @staticmethod
    def _path(req: Request) -> str:
        return "chat/completions" if req.messages is not None else "completions"

    async def stream(self, req: Request) -> AsyncIterator[str | Reply]:
        """Text deltas as the server streams them, then the ``Reply`` (one attempt: a stream that has
        started cannot be retried without repeating text). Leaving early closes the connection."""
        import aiohttp

        client, sem = self._state()
        model = req.model or self.model
        if model is None:
            yield Reply(error=f"backend {self.name!r}: no model name; set model: on the backend or agent")
            return
        start, parts, finish, usage = time.perf_counter(), [], "stop", {}
        params = {**self._params(req, model), "stream": True, "stream_options": {"include_usage": True}}
        chat = req.messages is not None
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.timeout, sock_read=self.timeout)
        async with sem:
            try:
                async with client.post(self._url(req), data=_dumps(params), timeout=timeout,
                                       allow_redirects=False) as resp:  # fmt: skip
                    if resp.status >= 400:
                        raise _status_error(resp, await resp.read())
                    async for raw in resp.content:
                        line = raw.decode("utf-8").strip()
                        if not line.startswith("data:") or line[5:].strip() == "[DONE]":
                            continue
                        chunk = json.loads(line[5:])
                        if "error" in chunk:
                            raise HTTPStatusError(502, str(chunk["error"].get("message", chunk["error"])))
                        usage = chunk.get("usage") or usage
                        for c in chunk.get("choices") or []:
                            piece = ((c.get("delta") or {}).get("content") if chat else c.get("text")) or ""
                            finish = c.get("finish_reason") or finish
                            if piece:
                                parts.append(piece)
                                yield piece
            except Exception as exc:
                yield Reply(error=_classify(exc)[1], seconds=time.perf_counter() - start)
                return
        yield Reply("".join(parts), prompt_tokens=usage.get("prompt_tokens") or 0,
                    completion_tokens=usage.get("completion_tokens") or 0,
                    seconds=time.perf_counter() - start, finish_reason=finish)  # fmt: skip

    async def _once(self, client: Any, req: Request, model: str) -> Reply:
        async with asyncio.timeout(self.timeout):
            async with client.post(self._url(req), data=_dumps(self._params(req, model)),
                                   allow_redirects=False) as resp:  # fmt: skip
                content = await resp.read()
        if resp.status >= 400:
            raise _status_error(resp, content)
        data = _loads(content)
        choice = data["choices"][0]
        text = (
            (choice.get("message") or {}).get("content") if req.messages is not None else choice.get("text")
        )
        usage = data.get("usage") or {}
        return Reply(
            text or "",
            prompt_tokens=usage.get("prompt_tokens") or 0,
            completion_tokens=usage.get("completion_tokens") or 0,
            finish_reason=choice.get("finish_reason") or "stop",
        )

    async def aclose(self) -> None:
        loop = asyncio.get_running_loop()
        for owner, session, _ in self._loop_state.values():
            if owner is loop:
                await session.close()
            elif not owner.is_closed():  # another loop's session: close it on that loop
                with contextlib.suppress(RuntimeError):
                    asyncio.run_coroutine_threadsafe(session.close(), owner)
        self._loop_state.clear()


class HTTPStatusError(Exception):
    """An HTTP error status from the server, with its OpenAI error message and ``Retry-After``."""

    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.retry_after = status, message, retry_after


def _status_error(resp: Any, content: bytes) -> HTTPStatusError:
    """The error of an ``aiohttp`` response with status >= 400 and its body ``content``."""
    try:
        body = json.loads(content)
        err = body.get("error", body) if isinstance(body, dict) else body
        message = str(err.get("message") or err) if isinstance(err, dict) else str(err)
    except ValueError:
        message = content.decode("utf-8", "replace") or (resp.reason or "")
    return HTTPStatusError(resp.status, message, _retry_after(resp.headers.get("Retry-After")))


def _classify(exc: Exception) -> tuple[bool, str, float | None]:
    """``(retry?, message, server-requested wait)`` for an exception raised by one attempt."""
    import aiohttp

    if isinstance(exc, TimeoutError):  # asyncio.timeout, and aiohttp's socket timeouts subclass it
        return True, "timed out", None
    if isinstance(exc, aiohttp.ClientConnectionError | aiohttp.ClientPayloadError | OSError):
        return True, f"connection failed ({type(exc).__name__})", None
    if isinstance(exc, HTTPStatusError):
        status = exc.status
        msg = f"HTTP {status}: {_short(exc.message)}"
        return status in RETRY_STATUS or status >= 500, msg, exc.retry_after
    return False, f"{type(exc).__name__}: {_short(str(exc))}", None


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
