"""A checked ``ServeConfig`` → the served models (id → ``Fusion``) and the app's options.

Backends are built once and shared by every model that names them (one loaded copy of each local model).
"""

from __future__ import annotations

from typing import Any

from lmfuse.backends import build_backend
from lmfuse.backends.base import Backend
from lmfuse.serve.app import ServerOptions
from lmfuse.serve.config import ServeConfig
from lmfuse.serve.fusion import Fusion


def server_options(config: ServeConfig) -> ServerOptions:
    s = config.server
    return ServerOptions(max_logprobs=s.max_logprobs, max_input_chars=s.max_input_chars,
                         max_body_bytes=s.max_body_bytes, limits=s.limits)  # fmt: skip


def build_models(config: ServeConfig, loaded: dict[str, Any] | None = None) -> dict[str, Fusion]:
    """Every model of ``config``; ``loaded`` (``{model path: (model, tokenizer)}``) reuses loaded models."""
    from lmfuse.serve import fusions

    backends: dict[str, Backend] = {}

    def backend(name: str) -> Backend:
        if name not in backends:
            backends[name] = build_backend(config.backends[name], name, loaded)
        return backends[name]

    return {
        model_id: fusions.build(config.model(model_id), model_id, backend, config.backends)
        for model_id in config.models
    }
