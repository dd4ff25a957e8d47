"""Real OpenAI-compatible member servers on 127.0.0.1 for the serve tests: scripted replies behind
lmfuse's own app, one server that is down, one that hangs, one that streams slowly."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from fastapi import FastAPI
from fastapi.responses import StreamingResponse

from lmfuse.backends.scripted import ScriptedBackend
from lmfuse.serve.app import create_app
from lmfuse.serve.faults import Faults
from lmfuse.serve.server import ServerThread

REPLIES = {
    "a": "The answer is 42.",
    "b": "Adding up, I think the answer is 42 here.",
    "c": "The answer is 7.",
}


def echo(request) -> str:
    """Replies with what it was asked (to check what members see)."""
    return "saw: " + request.as_text()


class SlowStream:
    """An OpenAI-style streaming completions server sending one chunk every ``every`` seconds; counts
    the chunks it sent and whether the client went away before the end."""

    def __init__(self, chunks: int = 40, every: float = 0.05) -> None:
        self.sent, self.cancelled, self.chunks, self.every = 0, asyncio.Event(), chunks, every
        self.app = FastAPI()
        self.app.post("/v1/chat/completions")(self.handle)
        self.app.post("/v1/completions")(self.handle)

    async def handle(self):
        async def gen():
            try:
                for i in range(self.chunks):
                    await asyncio.sleep(self.every)
                    self.sent += 1
                    body = {
                        "id": "x",
                        "object": "chat.completion.chunk",
                        "created": 0,
                        "model": "m",
                        "choices": [{"index": 0, "delta": {"content": f"w{i} "}, "finish_reason": None}],
                    }
                    yield f"data: {__import__('json').dumps(body)}\n\n"
                yield "data: [DONE]\n\n"
            except asyncio.CancelledError:
                self.cancelled.set()
                raise

        return StreamingResponse(gen(), media_type="text/event-stream")


@pytest.fixture(scope="package")
def members():
    """``{name: base_url}`` of every member server, all started once."""
    apps = {
        **{n: create_app({"m": ScriptedBackend(lambda r, t=t: t, delay=0.01)}) for n, t in REPLIES.items()},
        "echo": create_app({"m": ScriptedBackend(echo)}),
        "down": create_app({"m": ScriptedBackend(echo)}, Faults(down=True)),
        "hang": create_app({"m": ScriptedBackend(echo)}, Faults(hang_first=10**6, hang_seconds=30)),
    }
    slow = SlowStream()
    apps["slow"] = slow.app
    with contextlib.ExitStack() as stack:
        urls = {n: stack.enter_context(ServerThread(app, grace=0.1)).base_url for n, app in apps.items()}
        urls["_slow"] = slow
        yield urls
