"""EoT and MoA over zoo members, in-process: one ``hf`` backend per member (models loaded once, shared).

Used by the demo and the benchmark. Zoo models are completion models (``Q: 37+48= A:``, then a
scratchpad), so agents use the ``qa_lines`` prompt format (peers' answers shown as solved lines before
the question), which the zoo was trained to read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from lmfuse import zoo
from lmfuse.backends import BackendConfig
from lmfuse.backends.hf import HFBackend
from lmfuse.exchange.config import AgentConfig, EoTConfig, MoAConfig
from lmfuse.exchange.eot import EoT
from lmfuse.exchange.moa import MoA
from lmfuse.exchange.result import ExchangeResult


def zoo_eot(
    members: Sequence[str],
    load: Callable[[str], tuple],
    topology: str = "memory",
    max_rounds: int = 3,
    early_exit: bool = True,
) -> EoT:
    """An ``EoT`` with one agent per entry of ``members`` (zoo names; a name given twice makes two agents,
    ``base`` and ``base-2``, sharing one backend); ``load(name) -> (model, tokenizer)``."""
    names = agent_names(members)
    config = EoTConfig(
        backends={m: BackendConfig(kind="hf", model=f"zoo:{m}") for m in dict.fromkeys(members)},
        agents=[
            AgentConfig(name=a, backend=m, prompt_format="qa_lines", max_tokens=zoo.MAX_NEW_TOKENS)
            for a, m in zip(names, members, strict=True)
        ],
        topology=topology,
        max_rounds=max_rounds,
        early_exit=early_exit,
    )
    return EoT(config, backends=_backends(members, load))


def zoo_moa(proposers: Sequence[str], aggregator: str, load: Callable[[str], tuple], layers: int = 1) -> MoA:
    """An ``MoA`` with ``layers`` layers of one proposer per entry of ``proposers`` and ``aggregator``
    (zoo names) reading the last layer; ``load(name) -> (model, tokenizer)``. Calls per question:
    ``layers * len(proposers) + 1``."""
    names = agent_names(proposers)
    used = dict.fromkeys([*proposers, aggregator])

    def agent(name: str, member: str) -> AgentConfig:
        return AgentConfig(name=name, backend=member, prompt_format="qa_lines", max_tokens=zoo.MAX_NEW_TOKENS)

    config = MoAConfig(
        backends={m: BackendConfig(kind="hf", model=f"zoo:{m}") for m in used},
        layers=[[agent(a, m) for a, m in zip(names, proposers, strict=True)] for _ in range(layers)],
        aggregator=agent("aggregator", aggregator),
    )
    return MoA(config, backends=_backends(list(used), load))


def _backends(members: Sequence[str], load: Callable[[str], tuple]) -> dict[str, HFBackend]:
    return {m: HFBackend(*load(m), name=m, max_batch=512) for m in dict.fromkeys(members)}


def agent_names(members: Sequence[str]) -> list[str]:
    """``["base", "add", "base"]`` → ``["base", "add", "base-2"]``."""
    seen: dict[str, int] = {}
    names = []
    for m in members:
        seen[m] = seen.get(m, 0) + 1
        names.append(m if seen[m] == 1 else f"{m}-{seen[m]}")
    return names


def solve_all(eot: EoT | MoA, prompts: Sequence[str], ids: Sequence[str]) -> list[ExchangeResult]:
    """All questions at once, so each member's calls of a round share one batched ``generate``."""

    async def go() -> list[ExchangeResult]:
        return list(await asyncio.gather(*(eot.solve(p, i) for p, i in zip(prompts, ids, strict=True))))

    return asyncio.run(go())
