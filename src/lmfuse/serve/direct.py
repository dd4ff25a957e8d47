"""The two hot endpoints (``POST /v1/chat/completions``, ``POST /v1/completions``) served straight
from ASGI: the body is validated by pydantic from the raw JSON bytes (one pass, in Rust) and handed to
the route, without FastAPI's per-request dependency solving and request wrappers. Everything else (and
these paths' other methods) goes on to the FastAPI app. Errors take the same OpenAI shape as the app's."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel, ValidationError

Handler = Callable[[Any], Awaitable[Any]]


def describe(errors: list[dict[str, Any]], skip: int = 0) -> str:
    """pydantic errors as ``field.path: message; ...`` (``skip``: leading location parts to drop)."""
    parts = []
    for e in errors:
        where = ".".join(map(str, e["loc"][skip:] or e["loc"]))
        parts.append(f"{where}: {e['msg']}" if where else e["msg"])
    return "; ".join(parts)


class Direct:
    """ASGI layer: ``routes`` maps a path to ``(body model, handler)``; ``invalid(message)`` and
    ``failed(exc)`` make the error responses."""

    def __init__(self, app: Any, routes: dict[str, tuple[type[BaseModel], Handler]],
                 invalid: Callable[[str], Any], failed: Callable[[Exception], Any]) -> None:  # fmt: skip
        self.app, self.routes, self.invalid, self.failed = app, routes, invalid, failed

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        route = (
            self.routes.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        )
        if route is None:
            return await self.app(scope, receive, send)
        raw = await _body(receive)
        if raw is None:  # the client left before sending its body
            return None
        model, handler = route
        try:
            body = model.model_validate_json(raw)
        except ValidationError as exc:
            response = self.invalid(f"invalid request body: {describe(exc.errors())}")
        else:
            try:
                response = await handler(body)
            except Exception as exc:  # every failure becomes an OpenAI-shaped error
                response = self.failed(exc)
        await response(scope, receive, send)


async def _body(receive: Any) -> bytes | None:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)
