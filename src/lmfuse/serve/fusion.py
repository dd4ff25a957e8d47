"""What the HTTP layer asks of a served model, whatever its method: a ``Call`` in, an ``Outcome`` out.

``app.py`` turns an OpenAI request into ``Call`` objects and an ``Outcome`` into an OpenAI response; the
adapters in ``fusions.py`` turn a ``Call`` into the method's public API calls. Neither knows the other.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from lmfuse.backends.base import TokenLogprobs


class RequestError(Exception):
    """A request the model cannot take (400): too long for its context, an option it does not offer."""


class FusionFailed(Exception):
    """Too few members answered (502); ``details`` is the ``lmfuse`` field (who failed and why)."""

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.details = details or {}


@dataclass
class Call:
    """One prompt to answer ``n`` times, method-neutral. Exactly one of ``messages`` / ``prompt``."""

    messages: list[dict[str, str]] | None = None
    prompt: str | list[int] | None = None
    """A completion prompt: text, or token ids fed as is."""
    max_tokens: int | None = None
    """``None``: as many as the model's context leaves (chat without ``max_tokens``)."""
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] | None = None
    n: int = 1
    logprobs: int | None = None
    echo: bool = False
    details: bool = False
    """Include bulky method details (MoA layer answers, EoT rounds) in the ``lmfuse`` field."""


@dataclass
class Choice:
    text: str
    finish_reason: str
    logprobs: TokenLogprobs | None = None
    prompt_text: str | None = None
    """With ``echo``: the prompt's text, which the response puts before ``text``."""


@dataclass
class Outcome:
    choices: list[Choice]
    prompt_tokens: int = 0
    completion_tokens: int = 0
    details: dict[str, Any] = field(default_factory=dict)
    """The response's ``lmfuse`` field: members used and failed, per-member usage, method details."""


@dataclass
class Delta:
    """One streamed piece of choice ``index``: text as soon as it is decided, the finish at the end."""

    index: int
    text: str = ""
    logprobs: TokenLogprobs | None = None
    finish_reason: str | None = None


class Fusion(Protocol):
    """A served model. ``run`` answers a call; ``stream`` yields ``Delta`` objects and, last, the
    ``Outcome`` (for usage and the ``lmfuse`` field)."""

    method: str
    logprobs: bool
    """Whether ``Call.logprobs`` / ``echo`` are offered."""

    async def run(self, call: Call) -> Outcome: ...

    def stream(self, call: Call) -> AsyncIterator[Delta | Outcome]: ...

    async def aclose(self) -> None: ...
