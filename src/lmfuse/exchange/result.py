"""The outcome of one question (EoT or MoA) and the call plumbing both share."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from lmfuse.backends import BackendConfig, build_backend
from lmfuse.backends.base import Backend, Reply, Request
from lmfuse.exchange.transcript import Turn


@dataclass
class ExchangeResult:
    """One question's answer, how it was reached, what it cost, and its full transcript."""

    question_id: str
    question: str
    answer: str | None
    stop: str
    """EoT: ``early_exit``, ``unanimous``, ``majority`` or ``no_answer``; MoA: ``aggregated`` or ``failed``."""
    rounds: int
    """EoT: rounds run, round 0 included; MoA: proposer layers + 1."""
    answers: list[list[str | None]] = field(default_factory=list)
    """Extracted answers per round (EoT) or layer (MoA), in agent order."""
    confidences: list[list[float]] = field(default_factory=list)
    """EoT: each agent's confidence after each round."""
    failures: list[str] = field(default_factory=list)
    """``"round 1, agent B: HTTP 500: ..."`` for every call that failed after its retries."""
    turns: list[Turn] = field(default_factory=list, repr=False)
    text: str | None = None
    """The full text of the final reply: MoA's aggregator; EoT's reply of the lowest-indexed agent whose
    answer is the final answer in the last round (None when no answer was reached)."""
    finish_reason: str | None = None
    """That reply's ``finish_reason``: ``stop``, or ``length`` when it was cut at ``max_tokens``."""

    @property
    def calls(self) -> int:
        return len(self.turns)

    @property
    def prompt_tokens(self) -> int:
        return sum(t.prompt_tokens for t in self.turns)

    @property
    def completion_tokens(self) -> int:
        return sum(t.completion_tokens for t in self.turns)

    @property
    def truncated(self) -> int:
        """Replies cut at ``max_tokens`` (``finish_reason == "length"``); their answers may be wrong."""
        return sum(t.finish_reason == "length" and t.error is None for t in self.turns)

    @property
    def warnings(self) -> list[str]:
        """Things a user should know (library code never prints: the CLI shows these)."""
        cut = [
            f"{t.agent} (round {t.round})" for t in self.turns if t.finish_reason == "length" and not t.error
        ]
        if not cut:
            return []
        return [f"{len(cut)} replies cut at max_tokens, answers taken from unfinished text: {', '.join(cut)}"]

    def summary(self) -> dict[str, Any]:
        """Everything but the transcript, as plain data (one line of a results file)."""
        return {
            "id": self.question_id, "question": self.question, "answer": self.answer, "stop": self.stop,
            "rounds": self.rounds, "calls": self.calls, "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens, "answers": self.answers,
            "confidences": self.confidences, "failures": self.failures, "text": self.text,
            "finish_reason": self.finish_reason, "truncated": self.truncated,
        }  # fmt: skip


async def call_all(backends: Mapping[str, Backend], routed: Sequence[tuple[str, Request]]) -> list[Reply]:
    """Send each ``(backend name, request)``; every backend gets its share at once, all concurrently."""
    groups: dict[str, list[int]] = {}
    for i, (name, _) in enumerate(routed):
        groups.setdefault(name, []).append(i)
    outs = await asyncio.gather(
        *(backends[name].generate([routed[i][1] for i in idx]) for name, idx in groups.items())
    )
    replies: list[Reply | None] = [None] * len(routed)
    for idx, out in zip(groups.values(), outs, strict=True):
        for i, reply in zip(idx, out, strict=True):
            replies[i] = reply
    return replies  # type: ignore[return-value]


class Solver:
    """What EoT and MoA share: their backends by name, ``solve`` (async), ``run`` (blocking), ``aclose``."""

    def __init__(self, configs: Mapping[str, BackendConfig], given: Mapping[str, Backend] | None) -> None:
        self.backends: dict[str, Backend] = dict(given or {})
        self.warnings: list[str] = []
        """Set-up warnings (e.g. identical agents); the CLI prints them before running."""
        for name, bc in configs.items():
            if name not in self.backends:
                self.backends[name] = build_backend(bc, name)

    async def solve(self, question: str, question_id: str = "q0") -> ExchangeResult:
        raise NotImplementedError

    def run(self, question: str, question_id: str = "q0") -> ExchangeResult:
        """Blocking form of ``solve`` for scripts and notebooks (not inside a running event loop)."""

        async def go() -> ExchangeResult:
            try:
                return await self.solve(question, question_id)
            finally:
                await self.aclose()

        return asyncio.run(go())

    async def aclose(self) -> None:
        await asyncio.gather(*(b.aclose() for b in self.backends.values()))
