"""``serve.yaml`` → dataclasses: backends by name (exchange's ``BackendConfig``), models by id (each with
its ``method`` and that method's options), server options. Every problem is reported at once with its
field path (``models.vote-3.quorum: ...``), before any model is loaded or any port opened.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lmfuse.backends import BackendConfig
from lmfuse.core.config import from_dict
from lmfuse.errors import ConfigError
from lmfuse.serve.limits import Limits

ZOO_MAX_MODEL_LEN = 1024
"""The zoo models were trained on 64-token lines (their ``max_position_embeddings``), but RoPE lets them
read the longer prompts EoT and MoA build; served by default with this context length."""

METHODS = ("single", "vote", "moa", "eot", "ensemble")


@dataclass
class SingleModel:
    """A backend served as is."""

    method: str
    backend: str
    """Key in ``backends``."""
    max_model_len: int | None = None
    """Prompt + completion tokens a request may use (400 beyond); ``None``: the model's
    ``max_position_embeddings`` (local models; remote servers enforce their own)."""


METHOD_CLASSES: dict[str, type] = {"single": SingleModel}
"""method → its options dataclass (``fusions.py`` adds the fusion methods' classes)."""


@dataclass
class ServerConfig:
    """Server-wide options (``server:`` in serve.yaml)."""

    max_logprobs: int = 20
    """Largest ``logprobs`` K a request may ask for (as vLLM's ``--max-logprobs``)."""
    max_input_chars: int = 100_000
    """Largest prompt, all messages together, in characters (400 beyond)."""
    max_body_bytes: int = 4_000_000
    limits: Limits = field(default_factory=Limits)
    grace_seconds: float = 10.0
    """SIGTERM: in-flight requests get this long to finish; new ones are refused."""


@dataclass
class ServeConfig:
    backends: dict[str, BackendConfig] = field(default_factory=dict)
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    """model id → ``{method: ..., options of that method}``."""
    server: ServerConfig = field(default_factory=ServerConfig)

    def validate(self) -> list[str]:
        problems = [f"backends.{n}.{p}" for n, b in self.backends.items() for p in b.validate()]
        if not self.models:
            problems.append("models: expected at least one model id, found none")
        for model_id, raw in self.models.items():
            problems += [f"models.{model_id}.{p}" for p in _model_problems(raw, self.backends)]
        return problems

    def model(self, model_id: str) -> Any:
        """The options dataclass of ``model_id`` (valid after ``validate``)."""
        raw = self.models[model_id]
        return from_dict(METHOD_CLASSES[raw["method"]], raw)


def _model_problems(raw: Any, backends: dict[str, BackendConfig]) -> list[str]:
    if not isinstance(raw, dict) or raw.get("method") not in METHOD_CLASSES:
        found = raw.get("method") if isinstance(raw, dict) else raw
        return [f"method: expected one of {', '.join(METHOD_CLASSES)}, found {found!r}"]
    try:
        options = from_dict(METHOD_CLASSES[raw["method"]], raw)
    except ConfigError as exc:
        return exc.problems
    check = getattr(options, "check_names", None)
    return check(backends) if check else _check_backend(options.backend, backends)


def _check_backend(name: str, backends: dict[str, BackendConfig], where: str = "backend") -> list[str]:
    if name in backends:
        return []
    return [f"{where}: unknown backend {name!r}; defined: {', '.join(backends) or 'none'}"]


def parse(data: Any, source: str | None = None) -> ServeConfig:
    """Plain data (parsed YAML) → a checked ``ServeConfig``; raises ``ConfigError`` listing every problem."""
    return from_dict(ServeConfig, data, source=source)


def default_config() -> dict[str, Any]:
    """The embedded default: every zoo model as a ``single`` model (and, with ``fusions.py``, one fusion
    of each kind over them)."""
    from lmfuse import zoo

    backends = {n: {"kind": "hf", "model": f"zoo:{n}"} for n in zoo.names()}
    models = {n: {"method": "single", "backend": n, "max_model_len": ZOO_MAX_MODEL_LEN} for n in backends}
    return {"backends": backends, "models": models}
