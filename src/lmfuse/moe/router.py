"""Routing: scores, top-k selection, second-expert policies, capacity drops and the combine weights.

Everything here runs in fp32 whatever the model dtype (Switch: bf16 routers diverge). Random draws are
explicit inputs (``RouterDraws``) so that a test oracle can reuse exactly the same coin flips.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lmfuse.moe.capacity import apply_capacity
from lmfuse.moe.config import MoEConfig


@dataclass
class RouterDraws:
    """The random numbers one routing step uses (``None`` where the policy needs none)."""

    uniform: torch.Tensor | None = None
    """``(S, k)`` U(0,1) for the ``random`` policy (column 0 unused)."""
    gumbel: torch.Tensor | None = None
    """``(S, E)`` Gumbel(0,1) noise for the ``sampling`` policy."""


@dataclass
class Routing:
    """The result of routing ``S`` tokens to ``E`` experts with ``k`` choices each (all fp32)."""

    logits: torch.Tensor
    """``(S, E)`` router logits."""
    scores: torch.Tensor
    """``(S, E)`` softmax probabilities or sigmoid scores."""
    indices: torch.Tensor
    """``(S, k)`` chosen experts, first choice first."""
    weights: torch.Tensor
    """``(S, k)`` combine weights; exactly 0 where a choice was dropped."""
    keep: torch.Tensor
    """``(S, k)`` bool: the choice is dispatched to its expert."""
    capacity: int | None
    """Slots per expert, or ``None`` when dropless."""


def router_precision(t: torch.Tensor) -> torch.Tensor:
    """At least fp32: bf16/fp16 go up to fp32, fp64 (gradcheck) stays fp64."""
    return t if t.dtype == torch.float64 else t.float()


def make_draws(cfg: MoEConfig, num_tokens: int, generator: torch.Generator | None = None) -> RouterDraws:
    """Draw the random numbers ``cfg.second_expert_policy`` needs in training (CPU tensors)."""
    k, e = cfg.num_experts_per_tok, cfg.num_experts
    if cfg.second_expert_policy == "random":
        return RouterDraws(uniform=torch.rand(num_tokens, k, generator=generator))
    if cfg.second_expert_policy == "sampling":
        u = torch.rand(num_tokens, e, generator=generator).clamp_(1e-9, 1 - 1e-9)
        return RouterDraws(gumbel=-torch.log(-torch.log(u)))
    return RouterDraws()


def _select(cfg: MoEConfig, logits, scores, bias, draws, training) -> torch.Tensor:
    """``(S, k)`` expert ids: top-k on scores (+ bias, group-limited) or Gumbel sampling after the first."""
    k = cfg.num_experts_per_tok
    if cfg.scoring == "sigmoid":
        choice = scores if bias is None else scores + bias
        if cfg.n_group > 1:
            choice = _limit_groups(choice, cfg.n_group, cfg.topk_group)
        return torch.topk(choice, k, dim=-1).indices
    if training and cfg.second_expert_policy == "sampling" and k > 1:
        first = torch.argmax(logits, dim=-1, keepdim=True)
        noisy = (logits + draws.gumbel.to(logits.device)).scatter(-1, first, float("-inf"))
        return torch.cat([first, torch.topk(noisy, k - 1, dim=-1).indices], dim=-1)
    return torch.topk(scores, k, dim=-1).indices


def _limit_groups(choice: torch.Tensor, n_group: int, topk_group: int) -> torch.Tensor:
    """Mask experts outside each token's best ``topk_group`` groups with -inf (scores can be negative)."""
    s, e = choice.shape
    grouped = choice.view(s, n_group, e // n_group)
    group_score = grouped.topk(min(2, e // n_group), dim=-1).values.sum(-1)  # (S, n_group)
    best = group_score.topk(topk_group, dim=-1).indices
    allowed = torch.zeros(s, n_group, dtype=torch.bool, device=choice.device).scatter(1, best, True)
    return grouped.masked_fill(~allowed[..., None], float("-inf")).view(s, e)


def route(
    cfg: MoEConfig,
    logits: torch.Tensor,
    training: bool = False,
    bias: torch.Tensor | None = None,
    draws: RouterDraws | None = None,
) -> Routing:
    """Route ``logits`` ``(S, E)``: select, apply the second-expert policy and capacity, weight.

    ``bias`` ``(E,)`` shifts selection only (DeepSeek-V3); weights always come from the unbiased scores.
    """
    logits = router_precision(logits)
    s = logits.shape[0]
    scores = torch.sigmoid(logits) if cfg.scoring == "sigmoid" else torch.softmax(logits, dim=-1)
    policy = cfg.second_expert_policy if training else "all"
    if policy != "all" and draws is None:
        raise ValueError(f"second_expert_policy {policy!r} needs draws (see make_draws)")
    indices = _select(cfg, logits, scores, bias, draws, training)
    weights = scores.gather(1, indices)
    normalised = weights / weights.sum(-1, keepdim=True).clamp_min(1e-20)
    if cfg.norm_topk == "before_drop":
        weights = normalised
    keep = torch.ones_like(indices, dtype=torch.bool)
    if policy == "random" and indices.shape[1] > 1:
        # GShard random routing: choice j >= 1 survives iff 2·g_j > U, with g normalised before drops.
        keep[:, 1:] = 2 * normalised[:, 1:] > draws.uniform[:, 1:].to(logits.device)
    capacity = cfg.capacity(s, training)
    keep = apply_capacity(indices, keep, cfg.num_experts, capacity)
    weights = weights * keep
    if cfg.norm_topk == "after_drop":
        weights = weights / weights.sum(-1, keepdim=True).clamp_min(1e-20)
    return Routing(logits, scores, indices, weights * cfg.routed_scaling_factor, keep, capacity)
