"""Capacity: which routed choices win a slot in their expert's buffer.

Priority is choice-major, as in GShard: every token's first choice is placed before any token's second
choice, and within one choice rank tokens keep their order. A choice whose slot position is at or past the
capacity is dropped; a token dropped everywhere gets MoE output 0 and is carried by the residual.
"""

from __future__ import annotations

import torch


def slot_positions(indices: torch.Tensor, keep: torch.Tensor, num_experts: int) -> torch.Tensor:
    """Position of each kept choice in its expert's buffer (choice-major priority).

    ``indices``, ``keep``: ``(S, k)`` expert ids and which choices are still routed. Returns ``(S, k)`` int64
    slot positions; choices not kept get position ``S * k`` (never inside a buffer).
    """
    s, k = indices.shape
    # Choice-major flattening: all first choices, then all second choices, ...
    experts = torch.where(keep, indices, num_experts).t().reshape(-1)  # (k*S,)
    order = torch.argsort(experts, stable=True)
    counts = torch.bincount(experts, minlength=num_experts + 1)
    starts = torch.cumsum(counts, 0) - counts
    sorted_pos = torch.arange(s * k, device=indices.device) - starts[experts[order]]
    positions = torch.empty_like(sorted_pos)
    positions[order] = sorted_pos
    positions = torch.where(experts == num_experts, s * k, positions)
    return positions.view(k, s).t()


def apply_capacity(
    indices: torch.Tensor, keep: torch.Tensor, num_experts: int, capacity: int | None
) -> torch.Tensor:
    """``keep`` with the choices over ``capacity`` removed; ``capacity=None`` (dropless) returns ``keep``."""
    if capacity is None:
        return keep
    return keep & (slot_positions(indices, keep, num_experts) < capacity)
