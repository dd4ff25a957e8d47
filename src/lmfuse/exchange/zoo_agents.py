"""EoT over zoo members, in-process: one ``hf`` backend per member (models loaded once and shared).

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
from lmfuse.exchange.config import AgentConfig, EoTConfig
from lmfuse.exchange.eot import EoT
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
    backends = {m: HFBackend(*load(m), name=m, max_batch=512) for m in dict.fromkeys(members)}
    return EoT(config, backends=backends)


def agent_names(members: Sequence[str]) -> list[str]:
    """``["base", "add", "base"]`` → ``["base", "add", "base-2"]``."""
    seen: dict[str, int] = {}
    names = []
    for m in members:
        seen[m] = seen.get(m, 0) + 1
        names.append(m if seen[m] == 1 else f"{m}-{seen[m]}")
    return names


def solve_all(eot: EoT, prompts: Sequence[str], ids: Sequence[str]) -> list[ExchangeResult]:
    """All questions at once, so each member's calls of a round share one batched ``generate``."""

    async def go() -> list[ExchangeResult]:
        return list(await asyncio.gather(*(eot.solve(p, i) for p, i in zip(prompts, ids, strict=True))))

    return asyncio.run(go())
