"""Text-generation backends shared by every text-level feature: ``openai``, ``hf``, ``scripted``.

``BackendConfig`` is the YAML form; ``build_backend(config)`` makes the object. Heavy modules (torch,
transformers, openai) are imported only when a backend of that kind is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from lmfuse.backends.base import Backend, Reply, Request


@dataclass
class BackendConfig:
    """One backend. Fields not used by ``kind`` must be left out."""

    kind: Literal["openai", "hf", "scripted"]
    base_url: str | None = None
    """openai: ``http://host:port/v1``."""
    model: str | None = None
    """openai: default model name sent to the server; hf: ``zoo:NAME``, a directory or a hub id."""
    api_key_env: str | None = None
    """openai: environment variable holding the API key (none: the server needs no key)."""
    max_concurrency: int = 8
    """openai: calls in flight at once."""
    timeout: float = 60.0
    """openai: seconds per attempt."""
    max_retries: int = 3
    """openai: retries after the first attempt on 429/5xx/timeouts/connection errors."""
    backoff: float = 0.5
    """openai: first retry wait in seconds, doubled each retry."""
    replies: dict[str, Any] | None = None
    """scripted: ``{agent: [reply per round]}`` or ``{question_id: {agent: [...]}}``."""
    delay: float = 0.0
    """scripted: seconds each call takes."""

    def validate(self) -> list[str]:
        problems = []
        if self.kind == "openai" and not self.base_url:
            problems.append("base_url: required for kind openai (e.g. http://127.0.0.1:8000/v1)")
        if self.kind == "scripted" and self.replies is None:
            problems.append("replies: required for kind scripted ({agent: [reply per round]})")
        if self.kind != "scripted" and self.replies is not None:
            problems.append(f"replies: only for kind scripted, not {self.kind}")
        if self.max_concurrency < 1:
            problems.append(f"max_concurrency: expected >= 1, found {self.max_concurrency}")
        if self.max_retries < 0 or self.timeout <= 0:
            problems.append("max_retries must be >= 0 and timeout > 0")
        return problems


def build_backend(config: BackendConfig, name: str = "backend", loaded: dict | None = None) -> Backend:
    """Make the backend ``config`` describes. ``loaded``: ``{model: (model, tokenizer)}`` to reuse (hf)."""
    if config.kind == "scripted":
        from lmfuse.backends.scripted import ScriptedBackend

        return ScriptedBackend(config.replies or {}, name=name, delay=config.delay)
    if config.kind == "hf":
        from lmfuse.backends.hf import HFBackend

        path = config.model or "zoo:base"
        model, tok = (loaded or {}).get(path, (None, None))
        return HFBackend(model, tok, model_path=path, name=name)
    from lmfuse.backends.openai_api import OpenAIBackend

    return OpenAIBackend(
        config.base_url or "",
        model=config.model,
        api_key_env=config.api_key_env,
        name=name,
        max_concurrency=config.max_concurrency,
        timeout=config.timeout,
        max_retries=config.max_retries,
        backoff=config.backoff,
    )


__all__ = ["Backend", "BackendConfig", "Reply", "Request", "build_backend"]
