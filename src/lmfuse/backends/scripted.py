"""``scripted``: canned replies, for tests and examples. Every request it saw is kept in ``calls``.

A script is either a function ``Request -> str`` or a table. Table lookup for a request whose ``meta``
has ``question_id`` q, ``agent`` a and ``round`` r (round or MoA layer):

- ``table[q][a][r]`` when the table has a key ``q`` (replies per question), else ``table[a][r]``;
- a list shorter than ``r + 1`` repeats its last reply; a plain string is the reply for every round;
- a reply starting with ``!error`` makes the call fail with that message (to test failure handling).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from lmfuse.backends.base import Reply, Request
from lmfuse.errors import ConfigError

Script = Callable[[Request], str] | Mapping[str, Any]


class ScriptedBackend:
    """Replies from a script; ``delay`` seconds per call (concurrent calls overlap)."""

    def __init__(self, script: Script, name: str = "scripted", delay: float = 0.0) -> None:
        self.name = name
        self.script = script
        self.delay = delay
        self.calls: list[Request] = []

    def reply_for(self, request: Request) -> str:
        if callable(self.script):
            return self.script(request)
        meta = request.meta
        table: Any = self.script
        qid = meta.get("question_id")
        if qid is not None and qid in table:
            table = table[qid]
        agent = meta.get("agent")
        if agent not in table:
            raise ConfigError(
                f"scripted backend {self.name!r}: no replies for agent {agent!r}"
                f"{f' on question {qid!r}' if qid is not None else ''}; script has keys {sorted(table)}"
            )
        replies = table[agent]
        if isinstance(replies, str):
            return replies
        if not replies:
            raise ConfigError(f"scripted backend {self.name!r}: empty reply list for agent {agent!r}")
        return replies[min(int(meta.get("round", 0)), len(replies) - 1)]

    async def generate(self, requests: Sequence[Request]) -> list[Reply]:
        async def one(req: Request) -> Reply:
            self.calls.append(req)
            if self.delay:
                await asyncio.sleep(self.delay)
            text = self.reply_for(req)
            if text.startswith("!error"):
                return Reply(error=text[len("!error") :].strip() or "scripted failure", seconds=self.delay)
            words = len(req.as_text().split())
            return Reply(text, prompt_tokens=words, completion_tokens=len(text.split()), seconds=self.delay)

        return list(await asyncio.gather(*(one(r) for r in requests)))

    async def aclose(self) -> None:
        return None
