"""Pieces shared by the task-vector methods: sparsify a task vector, elect signs, combine.

Notation: base θ_b, models θ_i, task vectors τ_i = θ_i − θ_b, weights w_i, densities d_i. Every
function takes and returns tensors of one shape (the tensor being merged), in the working dtype.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from lmfuse.merge.methods import TensorRng

Sparsify = Callable[[torch.Tensor, dict, int], torch.Tensor]
"""``(τ_i, model parameters, model index) -> sparsified τ_i``."""


def magnitude_mask(tau: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the ``int(density · numel)`` largest-magnitude entries (TIES' trim); bool, shape of ``tau``.

    Exactly k entries are kept; among entries tied in magnitude at the cut, ``torch.topk`` decides.
    """
    n = tau.numel()
    k = int(density * n)
    if k >= n:
        return torch.ones_like(tau, dtype=torch.bool)
    mask = torch.zeros(n, dtype=torch.bool, device=tau.device)
    if k > 0:
        mask[torch.topk(tau.abs().reshape(-1), k, sorted=False).indices] = True
    return mask.reshape(tau.shape)


def random_mask(tau: torch.Tensor, keep: float | torch.Tensor, rng: TensorRng, index: int) -> torch.Tensor:
    """Keep each entry with probability ``keep`` (a number or a tensor of probabilities); bool."""
    return rng.uniform(index, tau) < keep


def combine(
    base: torch.Tensor,
    taus: Sequence[torch.Tensor],
    weights: Sequence[float],
    *,
    elect: bool,
    normalize: bool,
    lam: float,
) -> torch.Tensor:
    """θ_b + λ · merge(w_i τ_i): a plain sum, or TIES' disjoint merge when ``elect``.

    Without election: Σ w_i τ_i, divided by Σ w_i if ``normalize``. With election: Σ over the entries
    whose sign agrees with the elected sign, divided (if ``normalize``) by the sum of the weights of
    exactly those entries (a zero divisor counts as 1, i.e. the entry stays 0). The elected sign is
    TIES' "sum" election: the sign of Σ w_i τ_i, the side carrying the most weighted mass.
    """
    if not elect:  # a running sum: no (models, ...) stack
        merged = torch.zeros_like(base)
        for w_i, tau in zip(weights, taus, strict=True):
            merged.add_(tau, alpha=w_i)
        if normalize:
            total = sum(weights)
            merged.div_(total if abs(total) >= 1e-12 else 1.0)
        return base + lam * merged
    # Election and disjoint merge one model at a time: memory stays a few tensors, not (models, ...).
    total = torch.zeros_like(base)
    for w_i, tau in zip(weights, taus, strict=True):
        total.add_(tau, alpha=w_i)
    elected = torch.sign(total)
    del total
    merged, divisor = torch.zeros_like(base), torch.zeros_like(base)
    for w_i, tau in zip(weights, taus, strict=True):
        weighted = tau * w_i
        keep = torch.sign(weighted) == elected
        merged.add_(weighted * keep)
        divisor.add_(keep, alpha=w_i)
        del weighted, keep
    if normalize:
        divisor = torch.where(divisor.abs() < 1e-12, torch.ones_like(divisor), divisor)
        merged = merged / divisor
    return base + lam * merged


def task_vector_merge(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor,
    per_model: Sequence[dict],
    params: dict,
    sparsify: Sparsify | None,
    elect: bool,
) -> torch.Tensor:
    """The generalised task-arithmetic pipeline: τ_i, sparsify each, then ``combine``."""
    taus = []
    for i, (t, p) in enumerate(zip(tensors, per_model, strict=True)):
        tau = t - base
        taus.append(tau if sparsify is None else sparsify(tau, p, i))
    return combine(
        base,
        taus,
        [p["weight"] for p in per_model],
        elect=elect,
        normalize=params["normalize"],
        lam=params["lambda"],
    )
