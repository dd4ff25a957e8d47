"""Agents that would answer identically: default personas for EoT, and the warning for what remains.

With no persona and temperature 0, agents on one model get byte-identical prompts in round 0, so they
give identical replies, agree at once and exit early: EoT degenerates to one call repeated. EoT gives
each chat agent without a ``system`` prompt one of ``DEFAULT_PERSONAS`` (in agent order, cycling; turn
off with ``default_personas: false``). The personas are lmfuse's own text; they play the role of the
reference code's three students of different temperaments. ``qa_lines`` agents have no system prompt,
so agents that still share backend, model, prompt format, persona and temperature 0 are reported by
``identical_agents`` (the CLI prints it; nothing is changed for them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from lmfuse.exchange.config import AgentConfig

DEFAULT_PERSONAS = (
    "You are a meticulous solver. Work slowly, write every intermediate result, and check each step "
    "before moving on.",
    "You are a quick, intuitive solver. Find the most direct route to the answer, then verify it with "
    "a second, independent estimate.",
    "You are an inventive solver. Prefer an approach other than the obvious one, and say where the "
    "obvious approach could go wrong.",
    "You are a skeptical reviewer. Question every assumption in the problem and in any solution you "
    "read, and accept a claim only after checking it.",
    "You are a systematic solver. List what is given and what is asked, then derive the answer step by "
    "step from the givens alone.",
)


def with_default_personas(agents: Sequence[AgentConfig]) -> list[AgentConfig]:
    """``agents`` with a default persona for each chat agent that has none (the others unchanged)."""
    out = []
    for i, a in enumerate(agents):
        needs = a.system is None and a.prompt_format == "chat"
        out.append(replace(a, system=DEFAULT_PERSONAS[i % len(DEFAULT_PERSONAS)]) if needs else a)
    return out


def identical_agents(agents: Sequence[AgentConfig], where: str = "") -> list[str]:
    """One warning per group of >= 2 agents with the same backend, model, prompt and temperature 0."""
    groups: dict[tuple, list[str]] = {}
    for a in agents:
        if a.temperature == 0:
            key = (a.backend, a.model, a.prompt_format, a.system if a.prompt_format == "chat" else None)
            groups.setdefault(key, []).append(a.name)
    return [
        f"agents {', '.join(names)}{where} share backend {key[0]!r}"
        f"{f', model {key[1]!r}' if key[1] else ''}, prompt and temperature 0: they will give identical "
        "replies (EoT: agree in round 0 and exit early); give them different personas (system), models "
        "or a temperature > 0"
        for key, names in groups.items()
        if len(names) > 1
    ]
