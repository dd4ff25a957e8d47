"""``serve.yaml`` → dataclasses: backends by name (exchange's ``BackendConfig``), models by id (each with
its ``method`` and that method's options), server options. Every problem is reported at once with its
field path (``models.vote-3.quorum: ...``), before any model is loaded or any port opened.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lmfuse.backends import BackendConfig
from lmfuse.core.config import from_dict
from lmfuse.errors import ConfigError, LmfuseError
from lmfuse.serve.limits import Limits

ZOO_MAX_MODEL_LEN = 1024
"""The zoo models were trained on prompts of up to about 210 tokens (``max_position_embeddings`` 256), but
RoPE lets them read longer prompts EoT and MoA build; served by default with this context length."""


@dataclass
class SingleModel:
    """A backend served as is."""

    method: str
    backend: str
    """Key in ``backends``."""
    max_model_len: int | None = None
    """Prompt + completion tokens a request may use (400 beyond); ``None``: the model's
    ``max_position_embeddings`` (local models; remote servers enforce their own)."""


@dataclass
class _Fused:
    quorum: int | None = None
    """Members that must answer (default: more than half); fewer → 502 naming the failed ones."""
    timeout: float = 60.0
    """Seconds per member call; a member slower than this counts as failed."""

    def _common(self, n: int) -> list[str]:
        problems = []
        if self.quorum is not None and not 1 <= self.quorum <= n:
            problems.append(f"quorum: expected 1 to {n} (the number of members), found {self.quorum}")
        if self.timeout <= 0:
            problems.append(f"timeout: expected seconds > 0, found {self.timeout}")
        return problems

    def need(self, n: int) -> int:
        return self.quorum if self.quorum is not None else n // 2 + 1


@dataclass
class VoteModel(_Fused):
    """Crowd voting over the members' replies (``lmfuse.vote``): the most similar to all others wins."""

    method: str = "vote"
    members: list[str] = field(default_factory=list)
    """Keys in ``backends``."""
    similarity: str | list[str] = "char_rouge_l"
    """Any ``lmfuse.vote`` similarity (``answer``, ``rouge_l``, ``bleu``, ``embedding``...) or several."""
    similarity_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Options per similarity name, e.g. ``{answer: {kind: number}}``."""
    weights: list[float] | None = None
    """One weight per similarity (several similarities)."""
    normalize: str | None = None
    """How several similarities are normalised before summing (``zscore``, ``rank``)."""
    member_weights: list[float] | None = None
    """One weight per member: its replies count this much in every other candidate's score."""
    samples: int = 1
    """Replies per member (sampled when ``temperature`` > 0)."""

    def check_names(self, backends: dict[str, BackendConfig]) -> list[str]:
        problems = self._common(len(self.members))
        if not self.members:
            problems.append("members: expected at least one backend name, found none")
        for i, m in enumerate(self.members):
            problems += _check_backend(m, backends, f"members[{i}]")
        if self.samples < 1:
            problems.append(f"samples: expected >= 1, found {self.samples}")
        if self.member_weights is not None and len(self.member_weights) != len(self.members):
            problems.append(f"member_weights: expected {len(self.members)} (one per member), "
                            f"found {len(self.member_weights)}")  # fmt: skip
        try:
            self.similarities()
        except LmfuseError as exc:
            problems.append(f"similarity: {exc}")
        return problems

    def similarities(self) -> list[Any]:
        from lmfuse.vote import get_similarity

        names = [self.similarity] if isinstance(self.similarity, str) else self.similarity
        unknown = sorted(set(self.similarity_options) - set(names))
        if unknown:
            raise ConfigError(f"similarity_options for {unknown}, which are not in similarity {names}")
        return [get_similarity(n, **self.similarity_options.get(n, {})) for n in names]


@dataclass
class ExchangeModel(_Fused):
    """Options MoA and EoT share: agents are the named backends, or a full exchange recipe."""

    prompt_format: str = "chat"
    """``chat`` or ``qa_lines`` (zoo-style models), for agents given by backend name."""
    system: str | None = None
    """System prompt of agents given by backend name."""
    answer_kind: str = "number"
    recipe: dict[str, Any] | None = None
    """A full ``lmfuse moa`` / ``lmfuse exchange`` recipe without ``backends`` (its agents name backends
    of this file); replaces the shorthand fields."""
    details: bool = False
    """Always include the layer answers / rounds in the ``lmfuse`` field."""

    def agent(self, backend: str) -> dict[str, Any]:
        return {"name": backend, "backend": backend, "prompt_format": self.prompt_format,
                "system": self.system}  # fmt: skip

    def exchange_config(self, backends: dict[str, BackendConfig]) -> Any:
        from lmfuse.core.config import to_dict

        data = dict(self.recipe) if self.recipe is not None else self.shorthand()
        data["backends"] = {k: to_dict(v) for k, v in backends.items()}
        data.setdefault("answer_kind", self.answer_kind)
        return from_dict(self.recipe_class(), data)

    def check_names(self, backends: dict[str, BackendConfig]) -> list[str]:
        try:
            cfg = self.exchange_config(backends)
        except ConfigError as exc:
            return [f"{'recipe.' if self.recipe is not None else ''}{p}" for p in exc.problems]
        return self._common(len(self.member_names(cfg)))


@dataclass
class MoAModel(ExchangeModel):
    """Mixture-of-Agents (``lmfuse.exchange.MoA``): the aggregator's full reply is the answer."""

    method: str = "moa"
    proposers: list[str] = field(default_factory=list)
    layers: int = 1
    """Proposer layers, each of all ``proposers``."""
    aggregator: str | None = None
    layer_max_tokens: list[int] = field(default_factory=list)

    def recipe_class(self) -> type:
        from lmfuse.exchange.config import MoAConfig

        return MoAConfig

    def shorthand(self) -> dict[str, Any]:
        if not self.proposers or self.aggregator is None or self.layers < 1:
            return {"layers": [], "aggregator": {"name": "?", "backend": self.aggregator or "?"}}
        layer = [self.agent(p) for p in self.proposers]
        agg = {**self.agent(self.aggregator), "name": f"{self.aggregator}:aggregator"}
        return {"layers": [layer] * self.layers, "aggregator": agg, "layer_max_tokens": self.layer_max_tokens}

    @staticmethod
    def member_names(cfg: Any) -> list[str]:
        return [a.name for a in cfg.layers[0]]


@dataclass
class EoTModel(ExchangeModel):
    """Exchange-of-Thought (``lmfuse.exchange.EoT``): the full reply of an agent holding the final answer."""

    method: str = "eot"
    agents: list[str] = field(default_factory=list)
    topology: str | dict[str, list[str]] = "memory"
    max_rounds: int = 3
    early_exit: bool = True
    stop_on_unanimity: bool = True
    show_confidence: bool = True

    def recipe_class(self) -> type:
        from lmfuse.exchange.config import EoTConfig

        return EoTConfig

    def shorthand(self) -> dict[str, Any]:
        return {"agents": [self.agent(a) for a in self.agents], "topology": self.topology,
                "max_rounds": self.max_rounds, "early_exit": self.early_exit,
                "stop_on_unanimity": self.stop_on_unanimity, "show_confidence": self.show_confidence}  # fmt: skip

    @staticmethod
    def member_names(cfg: Any) -> list[str]:
        return [a.name for a in cfg.agents]


@dataclass
class EnsembleModel:
    """Token-level ensemble (``lmfuse.ensemble.Ensemble``) of local models decoding as one."""

    method: str = "ensemble"
    members: list[str] = field(default_factory=list)
    """Model paths: ``zoo:NAME``, directories or hub ids (local, not backends)."""
    weights: list[float] | None = None
    combine: str = "prob"
    align: str = "auto"
    union_top_k: int = 10
    gate: float | None = None
    dtype: str = "float32"
    max_model_len: int | None = None
    """Prompt + completion tokens a request may use (``None``: not checked beyond ``max_input_chars``)."""

    def check_names(self, backends: dict[str, BackendConfig]) -> list[str]:
        problems = []
        if not self.members:
            problems.append("members: expected at least one model path (zoo:NAME or a directory), found none")
        if self.weights is not None and len(self.weights) != len(self.members):
            problems.append(
                f"weights: expected {len(self.members)} (one per member), found {len(self.weights)}"
            )
        return problems


METHOD_CLASSES: dict[str, type] = {
    "single": SingleModel, "vote": VoteModel, "moa": MoAModel, "eot": EoTModel, "ensemble": EnsembleModel,
}  # fmt: skip
"""method → its options dataclass."""


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
    backends: dict[str, Any] = field(default_factory=dict)
    """name → ``BackendConfig`` fields (checked in ``validate``, so that a bad backend does not hide the
    models' problems)."""
    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    """model id → ``{method: ..., options of that method}``."""
    server: ServerConfig = field(default_factory=ServerConfig)

    def validate(self) -> list[str]:
        problems, checked = [], {}
        for name, raw in self.backends.items():
            try:
                checked[name] = from_dict(BackendConfig, raw)
            except ConfigError as exc:
                problems += [f"backends.{name}.{p}" for p in exc.problems]
                checked[name] = BackendConfig(kind="scripted", replies={})  # defined, for the name checks
        self.backends = checked
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
    """The embedded default: every zoo model as a ``single`` model, and one fusion of each kind over the
    specialists (``vote-zoo``, ``moa-zoo`` with ``base`` aggregating, ``eot-zoo``, ``ensemble-zoo``)."""
    from lmfuse import zoo

    backends = {n: {"kind": "hf", "model": f"zoo:{n}"} for n in zoo.names()}
    models: dict[str, Any] = {
        n: {"method": "single", "backend": n, "max_model_len": ZOO_MAX_MODEL_LEN} for n in backends
    }
    specialists = [n for n in zoo.SPECIALISTS if n in backends]
    if specialists and "base" in backends:
        qa = {"prompt_format": "qa_lines", "answer_kind": "number"}
        models["vote-zoo"] = {
            "method": "vote",
            "members": specialists,
            "similarity": "answer",
            "similarity_options": {"answer": {"kind": "number"}},
            "quorum": 1,
        }
        models["moa-zoo"] = {
            "method": "moa",
            "proposers": specialists,
            "aggregator": "base",
            "quorum": 1,
            **qa,
        }
        models["eot-zoo"] = {"method": "eot", "agents": specialists, "max_rounds": 3, "quorum": 1, **qa}
        models["ensemble-zoo"] = {"method": "ensemble", "members": ["zoo:base", *[f"zoo:{n}" for n in specialists]],
                                  "max_model_len": ZOO_MAX_MODEL_LEN}  # fmt: skip
    return {"backends": backends, "models": models}
