"""An OpenAI-compatible HTTP API over lmfuse backends: ``/v1/models``, ``/v1/completions``,
``/v1/chat/completions`` (no streaming, ``n = 1``). Concurrent requests to an ``hf`` backend are batched.
Errors use OpenAI's shape ``{"error": {"message", "type", "code"}}`` so every client reports them.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI
from fastapi import Request as HTTPRequest
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from lmfuse.backends.base import Backend, Request
from lmfuse.serve.faults import Faults


class ChatMessage(BaseModel):
    role: str
    content: str


class ChatBody(BaseModel):
    model: str
    messages: list[ChatMessage]
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float = 0.0
    stop: str | list[str] | None = None
    stream: bool = False
    n: int = 1


class CompletionBody(BaseModel):
    model: str
    prompt: str | list[str]
    max_tokens: int = 16
    temperature: float = 0.0
    stop: str | list[str] | None = None
    stream: bool = False
    n: int = 1


class APIError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


def _error(status: int, message: str, kind: str) -> JSONResponse:
    headers = {"retry-after": "0"} if status == 429 else None
    return JSONResponse(
        {"error": {"message": message, "type": kind, "code": status}}, status, headers=headers
    )


def _install_auth_and_errors(app: FastAPI, api_key: str | None) -> None:
    """API-key check (when set) and OpenAI-shaped errors for ``APIError`` and invalid bodies."""

    @app.middleware("http")
    async def _auth(request: HTTPRequest, call_next):
        if api_key is not None and request.headers.get("authorization") != f"Bearer {api_key}":
            return _error(
                401, "missing or wrong API key (send Authorization: Bearer <key>)", "authentication_error"
            )
        return await call_next(request)

    @app.exception_handler(APIError)
    async def _api_error(_: HTTPRequest, exc: APIError) -> JSONResponse:
        return _error(exc.status, exc.message, exc.kind)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: HTTPRequest, exc: RequestValidationError) -> JSONResponse:
        where = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return _error(400, f"invalid request body: {where}", "invalid_request_error")


def create_app(
    models: Mapping[str, Backend], faults: Faults | None = None, api_key: str | None = None
) -> FastAPI:
    """The app serving ``models`` (model id → backend), with optional injected ``faults``; with
    ``api_key``, requests must send ``Authorization: Bearer <api_key>`` (else 401)."""
    app = FastAPI(title="lmfuse serve", version="1")
    faults = faults or Faults()
    app.state.faults = faults

    _install_auth_and_errors(app, api_key)

    async def run(model: str, requests: list[Request], stream: bool, n: int) -> list:
        if model not in models:
            raise APIError(404, f"model {model!r} not found; served: {', '.join(models)}", "not_found_error")
        if stream or n != 1:
            raise APIError(400, "stream=true and n>1 are not supported by lmfuse serve")
        status = await faults.apply()
        if status is not None:
            raise APIError(status, f"injected failure (request {faults.seen})", "server_error")
        replies = await models[model].generate(requests)
        failed = [r.error for r in replies if not r.ok]
        if failed:
            raise APIError(500, f"generation failed: {failed[0]}", "server_error")
        return replies

    def envelope(kind: str, model: str, choices: list[dict], replies: list) -> dict[str, Any]:
        prompt = sum(r.prompt_tokens for r in replies)
        completion = sum(r.completion_tokens for r in replies)
        return {
            "id": f"lmfuse-{uuid.uuid4().hex[:16]}", "object": kind, "created": int(time.time()),
            "model": model, "choices": choices,
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
        }  # fmt: skip

    def stops(stop: str | list[str] | None) -> list[str] | None:
        return [stop] if isinstance(stop, str) else stop

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "lmfuse"} for m in models]
        return {"object": "list", "data": data}

    @app.post("/v1/completions")
    async def completions(body: CompletionBody) -> dict[str, Any]:
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        reqs = [Request(prompt=p, max_tokens=body.max_tokens, temperature=body.temperature, stop=stops(body.stop))
                for p in prompts]  # fmt: skip
        replies = await run(body.model, reqs, body.stream, body.n)
        choices = [
            {"index": i, "text": r.text, "logprobs": None, "finish_reason": r.finish_reason}
            for i, r in enumerate(replies)
        ]
        return envelope("text_completion", body.model, choices, replies)

    @app.post("/v1/chat/completions")
    async def chat(body: ChatBody) -> dict[str, Any]:
        max_tokens = body.max_completion_tokens or body.max_tokens or 256
        messages = [m.model_dump() for m in body.messages]
        req = Request(
            messages=messages, max_tokens=max_tokens, temperature=body.temperature, stop=stops(body.stop)
        )
        replies = await run(body.model, [req], body.stream, body.n)
        message = {"role": "assistant", "content": replies[0].text}
        choices = [{"index": 0, "message": message, "finish_reason": replies[0].finish_reason}]
        return envelope("chat.completion", body.model, choices, replies)

    return app
