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
    """One generation call: chat ``messages``, a completion ``prompt`` or token ids ``prompt_ids``
    (exactly one is set)."""

    messages: list[dict[str, str]] | None = None
    """``[{"role": "system"|"user"|"assistant", "content": ...}, ...]``."""
    prompt: str | None = None
    model: str | None = None
    """Model name sent to the server (``openai``); ``None``: the backend's default."""
    max_tokens: int = 256
    temperature: float = 0.0
    stop: list[str] | None = None
    top_p: float = 1.0
    seed: int | None = None
    """Seeded sampling: the same request with the same seed gives the same reply."""
    prompt_ids: list[int] | None = None
    """Token ids fed to the model as is (no BOS added); ``hf`` and ``openai`` completions."""
    logprobs: int | None = None
    """``hf``: also return the log-probs of each token and the ``logprobs`` most likely alternatives."""
    echo: bool = False
    """``hf``: with ``logprobs``, the prompt's tokens come first; ``Reply.prompt_text`` is set."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Who asks and why (``question_id``, ``agent``, ``round``): used by ``scripted`` and transcripts."""

    def __post_init__(self) -> None:
        given = [x is not None for x in (self.messages, self.prompt, self.prompt_ids)]
        if sum(given) != 1:
            raise ValueError("Request needs exactly one of messages=, prompt= or prompt_ids=")

    def as_text(self) -> str:
        """The request as readable text (a prompt, or the messages joined), for transcripts."""
        if self.prompt is not None:
            return self.prompt
        if self.prompt_ids is not None:
            return f"<token ids {self.prompt_ids}>"
        return "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in self.messages or [])


@dataclass
class TokenLogprobs:
    """Log-probs (natural log) of a reply's tokens under the model's own distribution (temperature 1,
    no top-p), echoed prompt tokens first. Entry ``t`` of each list belongs to token ``t``."""

    token_ids: list[int]
    tokens: list[str]
    """Each token's own text (``tokenizer.decode([id])``)."""
    token_logprobs: list[float | None]
    """``None`` for the first prompt token (nothing predicts it)."""
    top: list[list[tuple[int, str, float]] | None]
    """The most likely ``(id, text, logprob)`` at the token's position, best first, plus the token
    itself when it is not among them; ``None`` where ``token_logprobs`` is."""


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
    logprobs: TokenLogprobs | None = None
    """Set when the request asked for ``logprobs`` (backends that support it)."""
    prompt_text: str | None = None
    """The prompt as text, when the request asked for ``echo``."""

    @property
    def ok(self) -> bool:
        return self.error is None


@runtime_checkable
class Backend(Protocol):
    """A text generator. ``generate`` runs its requests concurrently (or batched) and keeps their order."""

    name: str

    async def generate(self, requests: Sequence[Request]) -> list[Reply]: ...

    async def aclose(self) -> None: ...
