"""Server-sent events as OpenAI streams them: ``data: {chunk}\\n\\n`` per chunk, then ``data: [DONE]``.

``chunks`` turns a fusion's stream (``Delta`` objects, then the ``Outcome``) into completion or chat
chunk bodies; ``prefetch`` runs a stream up to its first item so that a request failing before any
output gets a proper HTTP error status instead of a broken stream.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from lmfuse.serve import shapes
from lmfuse.serve.errors import classify
from lmfuse.serve.fusion import Delta, Outcome

try:
    import orjson

    def dumps(obj: Any) -> bytes:
        return orjson.dumps(obj)
except ImportError:  # orjson is in the serve extra; the stdlib does the same, slower

    def dumps(obj: Any) -> bytes:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def encode(body: dict[str, Any] | str) -> bytes:
    data = body.encode() if isinstance(body, str) else dumps(body)
    return b"data: " + data + b"\n\n"


async def prefetch(it: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """Await ``it``'s first item now (raising its error here), then an iterator over all of its items."""
    first = await anext(it)

    async def rest() -> AsyncIterator[Any]:
        yield first
        async for item in it:
            yield item

    return rest()


async def chunks(
    streams: list[AsyncIterator[Delta | Outcome]], n: int, chat: bool, model: str,
    delta_body: Callable[[Delta], dict[str, Any]], include_usage: bool,
) -> AsyncIterator[bytes]:  # fmt: skip
    """SSE bytes of one response: the prompts' streams one after the other (choice ``i * n + j``)."""
    rid = shapes.new_id("chatcmpl" if chat else "cmpl")
    kind = "chat.completion.chunk" if chat else "text_completion"
    head = {"id": rid, "object": kind, "created": shapes.int_time(), "model": model}
    outcomes: list[Outcome] = []
    try:
        for p, stream in enumerate(streams):
            if chat:
                for j in range(n):
                    role = {"index": p * n + j, "delta": {"role": "assistant", "content": ""},
                            "logprobs": None, "finish_reason": None}  # fmt: skip
                    yield encode({**head, "choices": [role]})
            async for item in stream:
                if isinstance(item, Outcome):
                    outcomes.append(item)
                    continue
                choice = {"index": p * n + item.index, **delta_body(item)}
                yield encode({**head, "choices": [choice]})
        if include_usage:
            yield encode({**head, "choices": [], "usage": shapes.usage(outcomes),
                          "lmfuse": shapes.lmfuse_field(outcomes) if outcomes else {}})  # fmt: skip
    except Exception as exc:  # after the first byte the status is sent: report in the stream
        status, kind_, message = classify(exc)
        yield encode(shapes.error_body(message, kind_, status))
    yield encode("[DONE]")
