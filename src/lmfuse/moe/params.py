"""Total and active parameter counts of a transformers MoE config, on the meta device (no memory)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ParamCounts:
    total: int
    """Every parameter."""
    active: int
    """Parameters one token uses: all but the ``E - k`` routed experts it skips in each MoE layer."""


def _experts_of(module) -> tuple[int, int] | None:
    """``(num_experts, params)`` of a routed-experts container, whatever its layout (stacked or list)."""
    params = sum(p.numel() for p in module.parameters())
    n = getattr(module, "num_experts", None)
    if n is None and isinstance(module, torch.nn.ModuleList):
        n = len(module)
    return (n, params) if n else None


def moe_param_counts(config) -> ParamCounts:
    """Counts for ``config`` (any transformers MoE config with ``num_experts_per_tok``)."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    total = sum(p.numel() for p in model.parameters())
    k = config.num_experts_per_tok
    skipped = 0
    for name, module in model.named_modules():
        if name.endswith(".experts"):
            found = _experts_of(module)
            if found:
                n, params = found
                skipped += params * (n - k) // n
    return ParamCounts(total=total, active=total - skipped)
