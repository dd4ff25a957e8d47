"""Who reads whom: EoT communication paradigms as data.

A topology for N agents is ``reads[i]`` = the sorted peers whose latest solution agent i sees each round
(its own latest solution is always shown too, so it is never listed). Built in, generalising the paper's
three agents A, B, C (agent 0 = A):

- ``memory``: complete graph, everyone reads everyone;
- ``report``: star on agent 0: agent 0 reads all, every other agent reads agent 0 only;
- ``relay``: directed ring, agent i reads agent (i + 1) mod N;
- ``debate``: agents 1..N-1 read each other, agent 0 reads them all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from lmfuse.errors import ConfigError

PARADIGMS = ("memory", "report", "relay", "debate")


def builtin(paradigm: str, n: int) -> list[list[int]]:
    """``reads`` of a built-in paradigm for ``n >= 2`` agents."""
    if n < 2:
        raise ConfigError(f"EoT needs at least 2 agents, found {n}")
    everyone = list(range(n))
    if paradigm == "memory":
        return [[j for j in everyone if j != i] for i in everyone]
    if paradigm == "report":
        return [everyone[1:]] + [[0] for _ in range(1, n)]
    if paradigm == "relay":
        return [[(i + 1) % n] for i in everyone]
    if paradigm == "debate":
        return [everyone[1:]] + [[j for j in everyone[1:] if j != i] or [] for i in range(1, n)]
    raise ConfigError(f"topology: expected one of {', '.join(PARADIGMS)} or an adjacency, found {paradigm!r}")


def from_adjacency(adjacency: Mapping[str, Sequence[str]], names: Sequence[str]) -> list[list[int]]:
    """``{"A": ["B", "C"], ...}`` (agent → agents it reads) → ``reads``; unlisted agents read nobody."""
    index = {name: i for i, name in enumerate(names)}
    problems = [
        f"adjacency: unknown agent {a!r}; agents are {', '.join(names)}" for a in adjacency if a not in index
    ]
    reads: list[list[int]] = [[] for _ in names]
    for reader, peers in adjacency.items():
        for peer in peers:
            if peer not in index:
                problems.append(f"adjacency.{reader}: unknown agent {peer!r}; agents are {', '.join(names)}")
            elif peer == reader:
                problems.append(f"adjacency.{reader}: an agent always sees its own solution; do not list it")
            elif reader in index:
                reads[index[reader]].append(index[peer])
    if problems:
        raise ConfigError(problems)
    return [sorted(set(r)) for r in reads]


def resolve(topology: str | Mapping[str, Sequence[str]], names: Sequence[str]) -> list[list[int]]:
    """A paradigm name or an adjacency mapping → ``reads`` for these agents."""
    if isinstance(topology, str):
        return builtin(topology, len(names))
    return from_adjacency(topology, names)
