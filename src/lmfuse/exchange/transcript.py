"""Transcripts: every prompt and reply of a run, one ``Turn`` per call, written as JSONL."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO

from lmfuse.backends.base import Reply, Request


@dataclass
class Turn:
    """One call of one agent in one round (EoT) or layer (MoA; the aggregator's layer is ``len(layers)``)."""

    question_id: str
    round: int
    agent: str
    prompt: str
    reply: str
    answer: str | None
    confidence: float | None = None
    """EoT: the agent's confidence after this round."""
    reads: list[str] = field(default_factory=list)
    """Agents whose solutions were in this prompt."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    attempts: int = 1
    error: str | None = None
    finish_reason: str = "stop"
    """The backend's: ``stop``, or ``length`` when the reply was cut at ``max_tokens``."""

    @classmethod
    def of(
        cls, question_id: str, rnd: int, agent: str, request: Request, reply: Reply, answer: str | None,
        confidence: float | None, reads: list[str],
    ) -> Turn:  # fmt: skip
        """The turn of ``request`` answered by ``reply``."""
        return cls(
            question_id, rnd, agent, request.as_text(), reply.text, answer, confidence, list(reads),
            reply.prompt_tokens, reply.completion_tokens, reply.seconds, reply.attempts, reply.error,
            reply.finish_reason,
        )  # fmt: skip


def turns_to_jsonl(turns: Iterable[Turn], stream: IO[str]) -> int:
    """Write one JSON object per turn; returns how many."""
    n = 0
    for t in turns:
        stream.write(json.dumps(asdict(t), ensure_ascii=False) + "\n")
        n += 1
    return n


def write_transcript(turns: Iterable[Turn], path: str | Path, append: bool = False) -> int:
    """Write (or append) turns to a JSONL file."""
    with open(path, "a" if append else "w", encoding="utf-8") as f:
        return turns_to_jsonl(turns, f)
