"""Finding the sparse-MoE blocks of a transformers model (Mixtral, Qwen2-MoE, Qwen3-MoE, ...) by structure:
a module with a ``gate`` (the router) and ``experts``."""

from __future__ import annotations

from torch import nn


def moe_blocks(model: nn.Module) -> list[nn.Module]:
    """The sparse-MoE blocks in layer order; raises ``ValueError`` when the model has none."""
    blocks = [m for m in model.modules() if hasattr(m, "gate") and hasattr(m, "experts")]
    if not blocks:
        raise ValueError(
            f"{type(model).__name__} has no mixture-of-experts blocks; pass an MoE model "
            "(e.g. one built with `lmfuse moe build`)"
        )
    return blocks


def router_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for block in moe_blocks(model) for p in block.gate.parameters()]
