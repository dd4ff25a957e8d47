"""What every text backend speaks: a ``Request`` in, a ``Reply`` out, many at a time.

A backend never raises for a failed call: the ``Reply`` carries ``error`` (after its retries), so that
callers can flag the failure and carry on with the other agents. Misconfiguration (an unknown model,
a missing API key) raises ``ConfigError`` / ``ModelNotFoundError`` when the backend is built.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass
class Request:
    """One generation call: chat ``messages`` or a plain completion ``prompt`` (exactly one is set)."""

    messages: list[dict[str, str]] | None = None
    """``[{"role": "system"|"user"|"assistant", "content": ...}, ...]``."""
    prompt: str | None = None
    model: str | None = None
    """Model name sent to the server (``openai``); ``None``: the backend's default."""
    max_tokens: int = 256
    temperature: float = 0.0
    stop: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    """Who asks and why (``question_id``, ``agent``, ``round``): used by ``scripted`` and transcripts."""

    def __post_init__(self) -> None:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("Request needs exactly one of messages= or prompt=")

    def as_text(self) -> str:
        """The request as readable text (a prompt, or the messages joined), for transcripts."""
        if self.prompt is not None:
            return self.prompt
        return "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in self.messages or [])


@dataclass
class Reply:
    """The outcome of one call. ``error`` is set (and ``text`` empty) when the call failed for good."""

    text: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    attempts: int = 1
    error: str | None = None
    finish_reason: str = "stop"
    """``stop`` (EOS or a stop string) or ``length`` (the token cap), as OpenAI reports it."""

    @property
    def ok(self) -> bool:
        return self.error is None


@runtime_checkable
class Backend(Protocol):
    """A text generator. ``generate`` runs its requests concurrently (or batched) and keeps their order."""

    name: str

    async def generate(self, requests: Sequence[Request]) -> list[Reply]: ...

    async def aclose(self) -> None: ...
