"""The seed's GShard formulation with one-hot masks and einsums — a test oracle, never the hot path.

It builds the ``(S, E, C)`` dispatch mask and combine weights from cumulative sums over one-hot choice
masks (choice by choice, so all first choices take slots before second choices), independently of the
sort-based code in ``capacity.py`` and ``dispatch.py``. Memory is ``O(S·E·C)``: small inputs only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lmfuse.moe.router import RouterDraws


def einsum_gating(
    logits: torch.Tensor,
    k: int,
    capacity: int,
    policy: str = "all",
    norm: str = "before_drop",
    draws: RouterDraws | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax top-k gating → ``combine (S, E, C)`` fp32 and ``dispatch (S, E, C)`` bool."""
    gates = torch.softmax(logits.float(), dim=-1)  # (S, E)
    s, e = gates.shape
    masks, picked = [], torch.zeros_like(gates, dtype=torch.bool)
    for j in range(k):
        source = logits.float() + draws.gumbel if (policy == "sampling" and j > 0) else gates
        idx = source.masked_fill(picked, float("-inf")).argmax(-1)
        mask = F.one_hot(idx, e).bool()
        picked |= mask
        masks.append(mask)
    g = torch.stack([(gates * m).sum(-1) for m in masks], -1)  # (S, k)
    g_norm = g / g.sum(-1, keepdim=True)
    if policy == "random":
        for j in range(1, k):
            masks[j] = masks[j] & (2 * g_norm[:, j] > draws.uniform[:, j]).unsqueeze(-1)
    if norm == "before_drop":
        g = g_norm
    filled = torch.zeros(e, dtype=torch.long)
    locations = []
    for j in range(k):
        loc = torch.cumsum(masks[j].long(), 0) - 1 + filled  # (S, E)
        filled = filled + masks[j].long().sum(0)
        masks[j] = masks[j] & (loc < capacity)
        locations.append((loc * masks[j]).sum(-1))  # (S,)
    kept = torch.stack([m.any(-1) for m in masks], -1).float()  # (S, k)
    g = g * kept
    if norm == "after_drop":
        g = g / g.sum(-1, keepdim=True).clamp_min(1e-20)
    combine = torch.zeros(s, e, capacity)
    for j in range(k):
        slot = F.one_hot(locations[j], capacity).float()  # (S, C)
        combine = combine + g[:, j, None, None] * masks[j].float().unsqueeze(-1) * slot.unsqueeze(1)
    return combine, combine > 0


def einsum_moe(
    x: torch.Tensor,
    router_weight: torch.Tensor,
    w_in: torch.Tensor,
    w_out: torch.Tensor,
    k: int,
    capacity: int,
    activation: str = "relu",
    policy: str = "all",
    norm: str = "before_drop",
    draws: RouterDraws | None = None,
) -> torch.Tensor:
    """``x (S, M)``, ``router_weight (E, M)``, ``w_in (E, I|2I, M)``, ``w_out (E, M, I)`` → ``(S, M)``."""
    logits = torch.einsum("SM,EM->SE", x.float(), router_weight.float())
    combine, dispatch = einsum_gating(logits, k, capacity, policy, norm, draws)
    dispatched = torch.einsum("SEC,SM->ECM", dispatch.to(x.dtype), x)
    h = torch.einsum("ECM,EHM->ECH", dispatched, w_in)
    if activation == "swiglu":
        gate, up = h.chunk(2, dim=-1)
        h = F.silu(gate) * up
    else:
        h = F.relu(h)
    out = torch.einsum("ECH,EMH->ECM", h, w_out)
    return torch.einsum("SEC,ECM->SM", combine.to(x.dtype), out)
