"""The MoE layer's configuration: one dataclass and the published presets.

Capacity (one formula for every mode): ``C = max(min_capacity, ceil(k * S / E * capacity_factor))`` slots
per expert for ``S`` tokens, ``E`` routed experts and ``k`` choices per token. GShard's ``2S/E`` is
``k = 2, capacity_factor = 1``; Switch's ``(S/E)·cf`` is ``k = 1``. ``capacity_factor = None`` is dropless.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

from lmfuse.errors import ConfigError


@dataclass
class MoEConfig:
    """A mixture-of-experts feed-forward layer (names follow transformers where they exist)."""

    hidden_size: int = 32
    """Model width ``M``."""
    moe_intermediate_size: int = 64
    """Width of one routed expert (fine-grained segmentation = more, narrower experts)."""
    num_experts: int = 8
    """Routed experts ``E``."""
    num_experts_per_tok: int = 2
    """Choices per token ``k``."""
    n_shared_experts: int = 0
    """Always-on shared experts (DeepSeekMoE); they form one dense MLP of width ``n·moe_intermediate_size``."""
    shared_expert_intermediate_size: int | None = None
    """Width of the shared MLP when it is not ``n_shared_experts·moe_intermediate_size`` (Qwen2-MoE)."""
    shared_expert_gate: bool = False
    """Qwen2-MoE: the shared MLP's output is scaled per token by ``sigmoid(x·w_g)``, ``w_g`` ``(1, M)``."""
    activation: Literal["swiglu", "relu"] = "swiglu"
    """``swiglu`` (Mixtral, DeepSeek: ``silu(gate)·up``) or ``relu`` (GShard's FFN)."""
    scoring: Literal["softmax", "sigmoid"] = "softmax"
    """Router scores: softmax over experts, or DeepSeek-V3's per-expert sigmoid with a selection bias."""
    norm_topk: Literal["before_drop", "after_drop", "none"] = "before_drop"
    """Renormalise the kept weights to sum to 1 before capacity drops, after them, or never."""
    routed_scaling_factor: float = 1.0
    """Multiplies the routed weights (2.5 in DeepSeek-V3)."""
    n_group: int = 1
    """Expert groups for group-limited routing (DeepSeek-V3: 8); 1 disables it."""
    topk_group: int = 1
    """Groups a token may use when ``n_group > 1``."""
    second_expert_policy: Literal["all", "random", "sampling"] = "all"
    """``all``: keep every choice; ``random``: GShard, keep choice ≥2 with probability min(1, 2·g);
    ``sampling``: choose experts after ≥1 on logits + Gumbel noise (training only)."""
    capacity_factor: float | None = None
    """Training capacity factor; ``None`` = dropless."""
    eval_capacity_factor: float | None = None
    """Capacity factor in eval mode; ``None`` = dropless."""
    min_capacity: int = 4
    """Lower bound of the capacity when a capacity factor is set."""
    router_jitter: float = 0.0
    """Multiplicative jitter ``U(1-ε, 1+ε)`` on the router input in training (Switch: 0.01)."""
    bias_update_rate: float = 0.0
    """Aux-loss-free balancing step (DeepSeek-V3: 0.001); applied by ``MoE.update_bias``."""
    backend: Literal["auto", "grouped", "loop", "fused"] = "auto"
    """Expert compute: one ``grouped_mm`` (fp32/bf16/fp16), a loop over experts, or ``auto``."""

    def validate(self) -> list[str]:
        problems = []
        for name in ("hidden_size", "moe_intermediate_size", "num_experts", "num_experts_per_tok"):
            if getattr(self, name) < 1:
                problems.append(f"{name}: expected a positive integer, found {getattr(self, name)}")
        if self.num_experts_per_tok > self.num_experts:
            problems.append(
                f"num_experts_per_tok: expected at most num_experts ({self.num_experts}), "
                f"found {self.num_experts_per_tok}"
            )
        for name in ("capacity_factor", "eval_capacity_factor"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                problems.append(f"{name}: expected a positive number or null (dropless), found {value}")
        if self.n_group < 1 or self.num_experts % self.n_group:
            problems.append(
                f"n_group: expected a divisor of num_experts ({self.num_experts}), found {self.n_group}"
            )
        elif self.n_group > 1 and not 1 <= self.topk_group <= self.n_group:
            problems.append(f"topk_group: expected 1..n_group ({self.n_group}), found {self.topk_group}")
        if self.shared_expert_gate and self.n_shared_experts < 1:
            problems.append("shared_expert_gate: needs a shared expert (n_shared_experts >= 1), found 0")
        width = self.shared_expert_intermediate_size
        if width is not None and width < 1:
            problems.append(
                f"shared_expert_intermediate_size: expected a positive integer or null, found {width}"
            )
        if self.scoring == "sigmoid" and self.second_expert_policy != "all":
            problems.append("second_expert_policy: sigmoid scoring supports only 'all'")
        if not 0 <= self.router_jitter < 1:
            problems.append(f"router_jitter: expected 0 <= value < 1, found {self.router_jitter}")
        return problems

    def check(self) -> MoEConfig:
        """Raise one ``ConfigError`` listing every problem; return ``self``."""
        problems = self.validate()
        if problems:
            raise ConfigError(problems)
        return self

    def capacity(self, num_tokens: int, training: bool) -> int | None:
        """Slots per expert for ``num_tokens`` tokens; ``None`` when dropless (see the module docstring)."""
        factor = self.capacity_factor if training else self.eval_capacity_factor
        if factor is None:
            return None
        k, e = self.num_experts_per_tok, self.num_experts
        return max(self.min_capacity, math.ceil(k * num_tokens / e * factor))

    @property
    def shared_width(self) -> int:
        """Width of the fused shared MLP (0 without shared experts)."""
        if not self.n_shared_experts:
            return 0
        return self.shared_expert_intermediate_size or self.n_shared_experts * self.moe_intermediate_size


PRESETS: dict[str, dict] = {
    # GShard: top-2, ReLU FFN, capacity 2S/E, random routing of the second expert, normalise before drops.
    "gshard": dict(
        num_experts_per_tok=2, activation="relu", second_expert_policy="random",
        capacity_factor=1.0, eval_capacity_factor=1.0, norm_topk="before_drop",
    ),
    # Switch: top-1 (the gate probability itself is the weight), cf 1.25 train / 2.0 eval, jitter.
    "switch": dict(
        num_experts_per_tok=1, activation="relu", norm_topk="none",
        capacity_factor=1.25, eval_capacity_factor=2.0, router_jitter=0.01,
    ),
    # Mixtral: dropless top-2 of 8, softmax renormalised over the two, SwiGLU experts.
    "mixtral": dict(num_experts=8, num_experts_per_tok=2, activation="swiglu", norm_topk="before_drop"),
    # DeepSeekMoE 16B: 64 fine-grained routed + 2 shared, 6 active, raw softmax weights.
    "deepseek_moe": dict(num_experts=64, num_experts_per_tok=6, n_shared_experts=2, norm_topk="none"),
    # Qwen2-MoE (Qwen1.5-MoE-A2.7B: 60 routed of width 1408, top-4, raw softmax weights, one shared MLP of
    # width 5632 scaled by a per-token sigmoid gate).
    "qwen2_moe": dict(
        num_experts=60, num_experts_per_tok=4, norm_topk="none", n_shared_experts=1,
        shared_expert_intermediate_size=5632, shared_expert_gate=True,
    ),
    # DeepSeek-V3: sigmoid scores, bias for selection only, top-8 of 256 in 4 of 8 groups, x2.5.
    "deepseek_v3": dict(
        num_experts=256, num_experts_per_tok=8, n_shared_experts=1, scoring="sigmoid",
        norm_topk="before_drop", routed_scaling_factor=2.5, n_group=8, topk_group=4,
        bias_update_rate=0.001,
    ),
}  # fmt: skip


def preset(name: str, **overrides) -> MoEConfig:
    """A preset's config (``gshard``, ``switch``, ``mixtral``, ``deepseek_moe``, ``qwen2_moe``, ``deepseek_v3``)
    with overrides."""
    if name not in PRESETS:
        raise ConfigError(f"preset: expected one of {', '.join(PRESETS)}, found {name!r}")
    fields = {f.name for f in dataclasses.fields(MoEConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ConfigError(f"unknown MoEConfig fields {unknown}; expected some of {sorted(fields)}")
    return MoEConfig(**{**PRESETS[name], **overrides}).check()
