"""YAML recipes of EoT and MoA: backends by name, agents that name their backend, and the rules."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from lmfuse.backends import BackendConfig
from lmfuse.exchange.topology import PARADIGMS

PromptFormat = Literal["chat", "qa_lines"]
AnswerKind = Literal["number", "choice", "yesno", "text"]
"""``text``: no extraction; the whole reply, whitespace collapsed (open-ended questions)."""


@dataclass
class AgentConfig:
    """One agent (EoT) or proposer/aggregator (MoA)."""

    name: str
    backend: str
    """Key in ``backends``."""
    model: str | None = None
    """openai: model name for this agent (overrides the backend's)."""
    system: str | None = None
    """Persona / system prompt."""
    prompt_format: PromptFormat = "chat"
    """``chat``: messages for chat models; ``qa_lines``: completion prompt for zoo-style completion models
    (peers' solutions are rendered as solved ``Q: ... A: ...`` lines before the question)."""
    max_tokens: int = 256
    temperature: float = 0.0


def _check_agents(agents: list[AgentConfig], backends: dict[str, BackendConfig], where: str) -> list[str]:
    problems, seen = [], set()
    for i, a in enumerate(agents):
        if a.name in seen:
            problems.append(f"{where}[{i}].name: duplicate agent name {a.name!r}; names must be unique")
        seen.add(a.name)
        if a.backend not in backends:
            have = ", ".join(backends) or "none"
            problems.append(f"{where}[{i}].backend: unknown backend {a.backend!r}; defined: {have}")
        elif a.model is not None and backends[a.backend].kind != "openai":
            problems.append(
                f"{where}[{i}].model: only openai backends take a model per agent; backend {a.backend!r} "
                f"is {backends[a.backend].kind} (set its model: on the backend instead)"
            )
        if a.max_tokens < 1:
            problems.append(f"{where}[{i}].max_tokens: expected >= 1, found {a.max_tokens}")
    return problems


@dataclass
class EoTConfig:
    """Exchange-of-Thought: agents re-solve a question after reading their peers' latest solutions."""

    backends: dict[str, BackendConfig]
    agents: list[AgentConfig]
    topology: str | dict[str, list[str]] = "memory"
    """``memory``, ``report``, ``relay``, ``debate``, or ``{agent: [agents it reads]}``."""
    max_rounds: int = 6
    """Rounds in all, the initial answers (round 0) included: the default 6 is round 0 plus the EoT
    reference's 5 exchange rounds (its ``--max-round 5``)."""
    early_exit: bool = True
    """Stop after round 0 when the initial answers are unanimous."""
    stop_on_unanimity: bool = True
    """Stop after any later round when all agents agree."""
    show_confidence: bool = True
    """Show each peer's confidence next to its solution from round 2 on."""
    answer_kind: AnswerKind = "number"
    default_personas: bool = True
    """Give each chat agent without ``system`` one of lmfuse's default personas (``diversity.py``), so
    that agents on one model at temperature 0 do not get byte-identical prompts."""

    def validate(self) -> list[str]:
        problems = _check_agents(self.agents, self.backends, "agents")
        if len(self.agents) < 2:
            problems.append(f"agents: EoT needs at least 2 agents, found {len(self.agents)}")
        if isinstance(self.topology, str) and self.topology not in PARADIGMS:
            problems.append(
                f"topology: expected one of {', '.join(PARADIGMS)} or a mapping, found {self.topology!r}"
            )
        if self.max_rounds < 1:
            problems.append(f"max_rounds: expected >= 1, found {self.max_rounds}")
        return problems


@dataclass
class MoAConfig:
    """Mixture-of-Agents: layers of proposers, each reading the previous layer, then an aggregator."""

    backends: dict[str, BackendConfig]
    layers: list[list[AgentConfig]]
    aggregator: AgentConfig
    layer_max_tokens: list[int] = field(default_factory=list)
    """Token cap per proposer layer (empty: each agent's own ``max_tokens``)."""
    answer_kind: AnswerKind = "number"

    def validate(self) -> list[str]:
        problems = []
        if not self.layers or any(not layer for layer in self.layers):
            problems.append("layers: expected at least one layer, each with at least one proposer")
        for k, layer in enumerate(self.layers):
            problems += _check_agents(layer, self.backends, f"layers[{k}]")
        problems += _check_agents([self.aggregator], self.backends, "aggregator")
        if self.layer_max_tokens and len(self.layer_max_tokens) != len(self.layers):
            problems.append(
                f"layer_max_tokens: expected {len(self.layers)} caps (one per layer), "
                f"found {len(self.layer_max_tokens)}"
            )
        problems += [
            f"layer_max_tokens[{k}]: expected >= 1, found {cap}"
            for k, cap in enumerate(self.layer_max_tokens)
            if cap < 1
        ]
        return problems
