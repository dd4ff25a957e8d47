"""The ``lmfuse moe build`` recipe: a base model plus dense experts of the same architecture.

```yaml
base: zoo:base                 # attention, norms, embeddings (and tokenizer) come from here
architecture: auto             # auto | mixtral | qwen2_moe | qwen3_moe
num_experts_per_tok: 2
router_init: hidden            # hidden | embed | random
routing: token                 # token (transformers' gates, per token) | prompt (one decision per prompt)
shared_weights: base           # base | average (Branch-Train-MiX: mean of the experts' non-MLP weights)
experts:
  - source: zoo:add
    positive_prompts: ["Q: 12+7= A:"]
    negative_prompts: []       # optional
```
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# Dense model_type → the native MoE architecture it becomes.
MOE_OF_DENSE = {"llama": "mixtral", "mistral": "mixtral", "qwen2": "qwen2_moe", "qwen3": "qwen3_moe"}


@dataclass
class ExpertSpec:
    """One dense expert and the prompts that describe what it is good at."""

    source: str
    """Model directory or ``zoo:NAME``; same architecture and shapes as the base."""
    positive_prompts: list[str] = field(default_factory=list)
    """Prompts this expert should receive (for ``hidden`` / ``embed`` router initialisation)."""
    negative_prompts: list[str] = field(default_factory=list)
    """Prompts it should not receive; without them the other experts' positives are the contrast."""


@dataclass
class SharedExpertSpec:
    """Qwen2-MoE's always-on shared expert: the MLP of ``source``."""

    source: str


@dataclass
class BuildRecipe:
    """How to build a native transformers MoE checkpoint out of dense fine-tunes of one base."""

    base: str
    experts: list[ExpertSpec]
    architecture: Literal["auto", "mixtral", "qwen2_moe", "qwen3_moe"] = "auto"
    num_experts_per_tok: int = 2
    router_init: Literal["hidden", "embed", "random"] = "hidden"
    router_scale: float = 1.0
    """Router rows are unit vectors times this (hidden/embed); larger = sharper routing."""
    routing: Literal["token", "prompt"] = "token"
    """``prompt``: also write a prompt router (``lmfuse.moe.prompt``), one decision per sequence from its
    prompt, initialised like the token gates (``hidden``/``embed``: contrast of the experts' prompts)."""
    shared_weights: Literal["base", "average"] = "base"
    shared_expert: SharedExpertSpec | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    seed: int = 0
    max_shard_bytes: int = 2 * 1024**3

    def validate(self) -> list[str]:
        problems = []
        n = len(self.experts)
        if n < 2:
            problems.append(f"experts: expected at least 2 experts, found {n}")
        if not 1 <= self.num_experts_per_tok <= max(n, 1):
            problems.append(
                f"num_experts_per_tok: expected 1..{n} (the number of experts), found {self.num_experts_per_tok}"
            )
        if self.router_init in ("hidden", "embed"):
            for i, e in enumerate(self.experts):
                if not e.positive_prompts:
                    problems.append(
                        f"experts[{i}].positive_prompts: router_init {self.router_init!r} needs at least one "
                        "prompt per expert (or use router_init: random)"
                    )
        if self.router_scale <= 0:
            problems.append(f"router_scale: expected a positive number, found {self.router_scale}")
        if self.max_shard_bytes <= 0:
            problems.append(f"max_shard_bytes: expected a positive integer, found {self.max_shard_bytes}")
        if self.shared_expert is not None and self.architecture not in ("auto", "qwen2_moe"):
            problems.append(
                f"shared_expert: only qwen2_moe has a shared expert, architecture is {self.architecture!r}"
            )
        return problems
