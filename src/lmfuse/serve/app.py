"""The OpenAI-compatible HTTP API: ``GET /v1/models``, ``POST /v1/completions``,
``POST /v1/chat/completions``, ``GET /health``. OpenAI shapes and errors only: each served model is a
``Fusion`` (``fusion.py``) and this layer knows no method. Errors have OpenAI's shape
``{"error": {"message", "type", "param", "code"}}`` so every client reports them.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI
from fastapi import Request as HTTPRequest
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException

from lmfuse.backends.base import Backend
from lmfuse.serve import shapes, stream
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
    """Largest request body; beyond it, 400."""
    limits: Limits = field(default_factory=Limits)

    def validate(self) -> list[str]:
        problems = [f"limits.{p}" for p in self.limits.validate()]
        for name in ("max_logprobs", "max_input_chars", "max_body_bytes"):
            if getattr(self, name) < (0 if name == "max_logprobs" else 1):
                problems.append(f"{name}: expected a positive number, found {getattr(self, name)}")
        return problems


def _error(status: int, message: str, kind: str, retry_after: float | None = None) -> JSONResponse:
    headers = {"retry-after": f"{retry_after:g}"} if status == 429 and retry_after is not None else None
    return JSONResponse(shapes.error_body(message, kind, status), status, headers=headers)


def _install_auth_and_errors(app: FastAPI, keys: Sequence[str], opts: ServerOptions) -> None:
    """API-key check (when keys are set), body-size limit and OpenAI-shaped errors for everything."""

    @app.middleware("http")
    async def _guard(request: HTTPRequest, call_next):
        if keys and request.url.path != "/health":
            sent = request.headers.get("authorization", "")
            token = sent[7:] if sent.startswith("Bearer ") else ""
            if not any(hmac.compare_digest(token.encode(), k.encode()) for k in keys):
                return _error(401, "missing or wrong API key (send Authorization: Bearer <key>)",
                              "authentication_error")  # fmt: skip
        size = request.headers.get("content-length")
        if size and size.isdigit() and int(size) > opts.max_body_bytes:
            return _error(400, f"request body is {int(size)} bytes; this server takes at most "
                          f"{opts.max_body_bytes}", "invalid_request_error")  # fmt: skip
        return await call_next(request)

    @app.exception_handler(HTTPException)
    async def _http(_: HTTPRequest, exc: HTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        return _error(exc.status_code, detail, kind_of(exc.status_code))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: HTTPRequest, exc: RequestValidationError) -> JSONResponse:
        where = "; ".join(f"{'.'.join(map(str, e['loc'][1:] or e['loc']))}: {e['msg']}" for e in exc.errors())
        return _error(400, f"invalid request body: {where}", "invalid_request_error")

    async def _classified(_: HTTPRequest, exc: Exception) -> JSONResponse:
        status, kind, message = classify(exc)
        if status == 500 and not isinstance(exc, APIError):
            log.error("request failed", exc_info=exc)
        return _error(status, message, kind, opts.limits.retry_after)

    for cls in (APIError, RequestError, FusionFailed, QueueFull, TimeoutError, Exception):
        app.add_exception_handler(cls, _classified)


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
    app = FastAPI(title="lmfuse serve", version="1", docs_url=None, redoc_url=None, openapi_url=None)
    faults = faults or Faults()
    gate = Gate(opts.limits)
    app.state.faults, app.state.gate, app.state.fusions = faults, gate, fusions
    _install_auth_and_errors(app, keys, opts)

    def fusion_for(model: str, call_logprobs: bool) -> Fusion:
        if model not in fusions:
            raise APIError(404, f"model {model!r} not found; served: {', '.join(fusions)}", "not_found_error")
        fusion = fusions[model]
        if call_logprobs and not fusion.logprobs:
            raise APIError(400, f"model {model!r} ({fusion.method}) does not offer logprobs or echo")
        return fusion

    def check_size(texts: list[str]) -> None:
        size = sum(len(t) for t in texts)
        if size > opts.max_input_chars:
            raise APIError(400, f"the input is {size} characters; this server takes at most "
                           f"{opts.max_input_chars} (server option max_input_chars)")  # fmt: skip

    def check_k(k: int | None, name: str) -> None:
        if k is not None and k > opts.max_logprobs:
            raise APIError(400, f"{name}: expected at most {opts.max_logprobs} (the server's max_logprobs), "
                           f"found {k}")  # fmt: skip

    async def injected() -> None:
        status = await faults.apply()
        if status is not None:
            raise APIError(status, f"injected failure (request {faults.seen})", kind_of(status))

    async def answer(fusion: Fusion, calls: list[Call]) -> list[Outcome]:
        async with gate.slot():
            await injected()
            work = asyncio.gather(*(fusion.run(c) for c in calls))
            return list(await asyncio.wait_for(work, opts.limits.timeout))

    async def streamed(fusion: Fusion, calls: list[Call], n: int, chat: bool, model: str, body, delta):
        slot = gate.slot()
        await slot.__aenter__()
        try:
            await injected()
            first = await stream.prefetch(fusion.stream(calls[0]))
        except BaseException:
            await slot.__aexit__(None, None, None)
            raise
        streams = [first, *(fusion.stream(c) for c in calls[1:])]
        include = bool((body.stream_options or {}).get("include_usage"))

        async def events():
            try:
                async for b in stream.chunks(streams, n, chat, model, delta, include):
                    yield b
            finally:
                await slot.__aexit__(None, None, None)

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "models": list(fusions)}

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        data = [{"id": m, "object": "model", "created": 0, "owned_by": f"lmfuse:{f.method}"}
                for m, f in fusions.items()]  # fmt: skip
        return {"object": "list", "data": data}

    @app.post("/v1/completions")
    async def completions(body: CompletionBody):
        fusion = fusion_for(body.model, body.logprobs is not None or body.echo)
        check_k(body.logprobs, "logprobs")
        prompts = body.prompts()
        if any(len(p) == 0 for p in prompts):
            raise APIError(
                400, "prompt: expected a non-empty string or list of token ids, found an empty one"
            )
        check_size(
            [p for p in prompts if isinstance(p, str)]
            + ["x" * len(p) for p in prompts if isinstance(p, list)]
        )
        calls = [Call(prompt=p, max_tokens=body.max_tokens, temperature=body.temperature, top_p=body.top_p,
                      seed=body.seed, stop=body.stops(), n=body.n, logprobs=body.logprobs, echo=body.echo)
                 for p in prompts]  # fmt: skip
        as_ids = body.return_tokens_as_token_ids
        if body.stream:
            delta = lambda d: shapes.completion_delta(d, as_ids)  # noqa: E731
            return await streamed(fusion, calls, body.n, False, body.model, body, delta)
        outs = await answer(fusion, calls)
        choices = [shapes.completion_choice(c, i * body.n + j, as_ids)
                   for i, o in enumerate(outs) for j, c in enumerate(o.choices)]  # fmt: skip
        return shapes.envelope("text_completion", body.model, choices, outs, shapes.new_id("cmpl"))

    @app.post("/v1/chat/completions")
    async def chat(body: ChatBody):
        k = (body.top_logprobs or 0) if body.logprobs else None
        fusion = fusion_for(body.model, k is not None)
        check_k(body.top_logprobs, "top_logprobs")
        messages = [{"role": m.role, "content": m.text()} for m in body.messages]
        check_size([m["content"] for m in messages])
        call = Call(messages=messages, max_tokens=body.max_completion_tokens or body.max_tokens,
                    temperature=body.temperature, top_p=body.top_p, seed=body.seed, stop=body.stops(),
                    n=body.n, logprobs=k)  # fmt: skip
        if body.stream:
            delta = lambda d: shapes.chat_delta(d, k)  # noqa: E731
            return await streamed(fusion, [call], body.n, True, body.model, body, delta)
        outs = await answer(fusion, [call])
        choices = [shapes.chat_choice(c, j, k) for j, c in enumerate(outs[0].choices)]
        return shapes.envelope("chat.completion", body.model, choices, outs, shapes.new_id("chatcmpl"))

    return app
