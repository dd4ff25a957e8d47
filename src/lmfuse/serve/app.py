"""The OpenAI-compatible HTTP API: ``GET /v1/models``, ``POST /v1/completions``,
``POST /v1/chat/completions``, ``GET /health``. OpenAI shapes and errors only: each served model is a
``Fusion`` (``fusion.py``) and this layer knows no method. Errors have OpenAI's shape
``{"error": {"message", "type", "param", "code"}}`` so every client reports them.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI
from fastapi import Request as HTTPRequest
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response, StreamingResponse
from starlette.exceptions import HTTPException

from lmfuse.backends.base import Backend
from lmfuse.serve import shapes, stream
from lmfuse.serve.direct import Direct, describe
from lmfuse.serve.errors import APIError, classify, kind_of
from lmfuse.serve.faults import Faults
from lmfuse.serve.fusion import Call, Fusion, FusionFailed, Outcome, RequestError
from lmfuse.serve.fusions import Single
from lmfuse.serve.limits import Gate, Limits, QueueFull
from lmfuse.serve.schema import ChatBody, CompletionBody

log = logging.getLogger("lmfuse.serve")


@dataclass
class ServerOptions:
    """What the server enforces on every request, whatever the model."""

    max_logprobs: int = 20
    """Largest ``logprobs`` (completions) / ``top_logprobs`` (chat) K, as vLLM's ``--max-logprobs``."""
    max_input_chars: int = 100_000
    """Largest prompt (all messages together), in characters; beyond it, 400."""
    max_body_bytes: int = 4_000_000
    """Largest request body, with or without Content-Length (chunked); beyond it, 413."""
    limits: Limits = field(default_factory=Limits)

    def validate(self) -> list[str]:
        problems = [f"limits.{p}" for p in self.limits.validate()]
        for name in ("max_logprobs", "max_input_chars", "max_body_bytes"):
            if getattr(self, name) < (0 if name == "max_logprobs" else 1):
                problems.append(f"{name}: expected a positive number, found {getattr(self, name)}")
        return problems


class FastJSON(Response):
    """A JSON response rendered by orjson (the stdlib json where orjson is missing)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return stream.dumps(content)


def _error(status: int, message: str, kind: str, retry_after: float | None = None) -> Response:
    headers = {"retry-after": f"{retry_after:g}"} if status == 429 and retry_after is not None else None
    return FastJSON(shapes.error_body(message, kind, status), status, headers=headers)


class Guard:
    """Pure ASGI middleware (no per-request task): the API-key check and the body-size limit (by the
    Content-Length header; a chunked body is read up to the limit and refused with 413 past it)."""

    def __init__(self, app: Any, keys: Sequence[str], max_body_bytes: int) -> None:
        self.app, self.keys, self.max_body = app, [k.encode() for k in keys], max_body_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        if self.keys and scope["path"] != "/health":
            sent = headers.get(b"authorization", b"")
            token = sent[7:] if sent.startswith(b"Bearer ") else b""
            if not any(hmac.compare_digest(token, k) for k in self.keys):
                msg = "missing or wrong API key (send Authorization: Bearer <key>)"
                return await _error(401, msg, "authentication_error")(scope, receive, send)
        size = headers.get(b"content-length")
        if size is not None:
            if size.isdigit() and int(size) > self.max_body:
                msg = f"request body is {int(size)} bytes; this server takes at most {self.max_body}"
                return await _error(413, msg, "invalid_request_error")(scope, receive, send)
            return await self.app(scope, receive, send)
        head = await self._bounded(receive)  # chunked: read up to the limit, no further
        if head is None:
            msg = (f"request body is over {self.max_body} bytes (sent chunked); this server takes at "
                   f"most {self.max_body}")  # fmt: skip
            return await _error(413, msg, "invalid_request_error")(scope, receive, send)
        return await self.app(scope, _replay(head, receive), send)

    async def _bounded(self, receive: Any) -> list[dict] | None:
        """The body messages of a request without Content-Length, read until its end, or ``None`` as
        soon as they pass ``max_body`` bytes (the rest is never read here)."""
        messages, size = [], 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":  # the client left
                return messages
            size += len(message.get("body", b""))
            if size > self.max_body:
                return None
            if not message.get("more_body", False):
                return messages


def _replay(messages: list[dict], receive: Any) -> Any:
    """A ``receive`` that hands out ``messages`` first, then what ``receive`` gives (a disconnect)."""
    pending = list(messages)

    async def replayed() -> dict:
        return pending.pop(0) if pending else await receive()

    return replayed


def _failure(exc: Exception, opts: ServerOptions) -> Response:
    """The OpenAI-shaped error response of an exception raised while answering."""
    status, kind, message = classify(exc)
    if status == 500 and not isinstance(exc, APIError):
        log.error("request failed", exc_info=exc)
    return _error(status, message, kind, opts.limits.retry_after)


def _install_auth_and_errors(app: FastAPI, keys: Sequence[str], opts: ServerOptions, routes: Routes) -> None:
    """API-key check (when keys are set), body-size limit, the hot endpoints served directly
    (``direct.py``) and OpenAI-shaped errors for everything."""
    direct = {
        "/v1/chat/completions": (ChatBody, routes.chat),
        "/v1/completions": (CompletionBody, routes.completions),
    }
    app.add_middleware(Direct, routes=direct, invalid=lambda m: _error(400, m, "invalid_request_error"),
                       failed=lambda exc: _failure(exc, opts))  # fmt: skip
    app.add_middleware(Guard, keys=keys, max_body_bytes=opts.max_body_bytes)  # outside: checked first

    @app.exception_handler(HTTPException)
    async def _http(_: HTTPRequest, exc: HTTPException) -> Response:
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        return _error(exc.status_code, detail, kind_of(exc.status_code))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: HTTPRequest, exc: RequestValidationError) -> Response:
        return _error(400, f"invalid request body: {describe(exc.errors(), 1)}", "invalid_request_error")

    async def _classified(_: HTTPRequest, exc: Exception) -> Response:
        return _failure(exc, opts)

    for cls in (APIError, RequestError, FusionFailed, QueueFull, TimeoutError, Exception):
        app.add_exception_handler(cls, _classified)


class Routes:
    """The endpoints and the checks every request goes through, over ``fusions`` (model id → fusion)."""

    def __init__(self, fusions: dict[str, Fusion], faults: Faults, opts: ServerOptions) -> None:
        self.fusions, self.faults, self.opts = fusions, faults, opts
        self.gate = Gate(opts.limits)

    def fusion_for(self, model: str, wants_logprobs: bool) -> Fusion:
        if model not in self.fusions:
            served = ", ".join(self.fusions)
            raise APIError(404, f"model {model!r} not found; served: {served}", "not_found_error")
        fusion = self.fusions[model]
        if wants_logprobs and not fusion.logprobs:
            raise APIError(400, f"model {model!r} ({fusion.method}) does not offer logprobs or echo")
        return fusion

    def check_size(self, size: int) -> None:
        if size > self.opts.max_input_chars:
            raise APIError(400, f"the input is {size} characters; this server takes at most "
                           f"{self.opts.max_input_chars} (server option max_input_chars)")  # fmt: skip

    def check_k(self, k: int | None, name: str) -> None:
        if k is not None and k > self.opts.max_logprobs:
            raise APIError(400, f"{name}: expected at most {self.opts.max_logprobs} (the server's "
                           f"max_logprobs), found {k}")  # fmt: skip

    async def injected(self) -> None:
        status = await self.faults.apply()
        if status is not None:
            raise APIError(status, f"injected failure (request {self.faults.seen})", kind_of(status))

    async def answer(self, fusion: Fusion, calls: list[Call]) -> list[Outcome]:
        async with self.gate.slot():
            await self.injected()
            async with asyncio.timeout(self.opts.limits.timeout):
                if len(calls) == 1:  # no task for a lone prompt
                    return [await fusion.run(calls[0])]
                return list(await asyncio.gather(*(fusion.run(c) for c in calls)))

    async def streamed(
        self, fusion: Fusion, calls: list[Call], chat: bool, body: Any, delta: Any
    ) -> Response:
        """An SSE response; a failure before the first piece is a plain HTTP error instead."""
        slot = self.gate.slot()
        await slot.__aenter__()
        try:
            await self.injected()
            first = await stream.prefetch(fusion.stream(calls[0]))
        except BaseException:
            await slot.__aexit__(None, None, None)
            raise
        streams = [first, *(fusion.stream(c) for c in calls[1:])]
        include = bool((body.stream_options or {}).get("include_usage"))

        async def events():
            try:
                async for b in stream.chunks(streams, body.n, chat, body.model, delta, include):
                    yield b
            finally:
                await slot.__aexit__(None, None, None)

        return StreamingResponse(events(), media_type="text/event-stream")

    async def health(self) -> Response:
        # worker: the pid of the server process that answered (one of several with ``--workers N``)
        return FastJSON({"status": "ok", "models": list(self.fusions), "worker": os.getpid()})

    async def list_models(self) -> Response:
        data = [{"id": m, "object": "model", "created": 0, "owned_by": f"lmfuse:{f.method}"}
                for m, f in self.fusions.items()]  # fmt: skip
        return FastJSON({"object": "list", "data": data})

    async def completions(self, body: CompletionBody) -> Response:
        fusion = self.fusion_for(body.model, body.logprobs is not None or body.echo)
        if (body.return_tokens_as_token_ids or body.echo) and not getattr(fusion, "token_ids", True):
            raise APIError(400, f"model {body.model!r} ({fusion.method}) has no token ids: "
                           "return_tokens_as_token_ids and echo are for single models")  # fmt: skip
        self.check_k(body.logprobs, "logprobs")
        prompts = body.prompts()
        if any(len(p) == 0 for p in prompts):
            raise APIError(
                400, "prompt: expected a non-empty string or list of token ids, found an empty one"
            )
        self.check_size(sum(len(p) for p in prompts))  # characters, or tokens of token-id prompts
        calls = [Call(prompt=p, max_tokens=body.max_tokens, temperature=body.temperature, top_p=body.top_p,
                      seed=body.seed, stop=body.stops(), n=body.n, logprobs=body.logprobs, echo=body.echo)
                 for p in prompts]  # fmt: skip
        as_ids = body.return_tokens_as_token_ids
        if body.stream:
            return await self.streamed(
                fusion, calls, False, body, lambda d: shapes.completion_delta(d, as_ids)
            )
        outs = await self.answer(fusion, calls)
        choices = [shapes.completion_choice(c, i * body.n + j, as_ids)
                   for i, o in enumerate(outs) for j, c in enumerate(o.choices)]  # fmt: skip
        return FastJSON(shapes.envelope("text_completion", body.model, choices, outs, shapes.new_id("cmpl")))

    async def chat(self, body: ChatBody) -> Response:
        k = (body.top_logprobs or 0) if body.logprobs else None
        fusion = self.fusion_for(body.model, k is not None)
        self.check_k(body.top_logprobs, "top_logprobs")
        messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        self.check_size(sum(len(m["content"]) for m in messages))
        call = Call(messages=messages, max_tokens=body.max_completion_tokens or body.max_tokens,
                    temperature=body.temperature, top_p=body.top_p, seed=body.seed, stop=body.stops(),
                    n=body.n, logprobs=k)  # fmt: skip
        if body.stream:
            return await self.streamed(fusion, [call], True, body, lambda d: shapes.chat_delta(d, k))
        outs = await self.answer(fusion, [call])
        choices = [shapes.chat_choice(c, j, k) for j, c in enumerate(outs[0].choices)]
        return FastJSON(
            shapes.envelope("chat.completion", body.model, choices, outs, shapes.new_id("chatcmpl"))
        )


def create_app(
    models: Mapping[str, Fusion | Backend], faults: Faults | None = None,
    api_key: str | Sequence[str] | None = None, options: ServerOptions | None = None,
) -> FastAPI:  # fmt: skip
    """The app serving ``models`` (model id → fusion, or a backend served as is), with optional injected
    ``faults``; with ``api_key`` (one or several), requests must send ``Authorization: Bearer <key>``."""
    fusions: dict[str, Fusion] = {
        k: m if hasattr(m, "method") else Single(m, k)  # type: ignore[arg-type]
        for k, m in models.items()
    }
    opts = options or ServerOptions()
    keys = [api_key] if isinstance(api_key, str) else list(api_key or [])
    app = FastAPI(default_response_class=FastJSON, title="lmfuse serve", version="1", docs_url=None,
                  redoc_url=None, openapi_url=None)  # fmt: skip
    routes = Routes(fusions, faults or Faults(), opts)
    app.state.faults, app.state.gate, app.state.fusions = routes.faults, routes.gate, fusions
    _install_auth_and_errors(app, keys, opts, routes)
    app.get("/health")(routes.health)
    app.get("/v1/models")(routes.list_models)
    app.post("/v1/completions")(routes.completions)
    app.post("/v1/chat/completions")(routes.chat)
    return app
