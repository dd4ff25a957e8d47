"""Model Breadcrumbs (Davari & Belilovsky 2024, "Model Breadcrumbs: scaling multi-task model merging
with sparse masks", ECCV).

Per task vector τ_i, sort entries by magnitude: drop the largest ``gamma`` fraction (outliers) and
keep the next ``density`` fraction; everything smaller is dropped too. Then

    breadcrumbs:       θ = θ_b + λ · Σ_i w_i τ̂_i          (÷ Σ w_i if normalize, default false)
    breadcrumbs_ties:  the same masks, then TIES' sign election and disjoint merge (normalize true)
"""

from __future__ import annotations

import torch

from lmfuse.merge.methods import (
    DENSITY,
    INT8_MASK,
    LAMBDA,
    NORMALIZE_FALSE,
    NORMALIZE_TRUE,
    WEIGHT,
    Param,
    register,
)  # fmt: skip
from lmfuse.merge.methods.common import task_vector_merge

GAMMA = Param(0.01, low=0.0, high=1.0, doc="fraction of the largest-magnitude entries dropped")


def breadcrumb_mask(tau: torch.Tensor, density: float, gamma: float) -> torch.Tensor:
    """Keep magnitude ranks [⌊γn⌋, ⌊γn⌋ + ⌊dn⌋) counted from the largest; bool, shape of ``tau``."""
    n = tau.numel()
    top, keep = int(gamma * n), int(density * n)
    if top == 0 and keep >= n:
        return torch.ones_like(tau, dtype=torch.bool)
    order = torch.argsort(tau.abs().reshape(-1), descending=True)
    mask = torch.zeros(n, dtype=torch.bool, device=tau.device)
    mask[order[top : top + keep]] = True
    return mask.reshape(tau.shape)


def _breadcrumbs(tensors, base, per_model, params, elect: bool) -> torch.Tensor:
    def sparsify(tau, p, i):
        return tau.mul_(breadcrumb_mask(tau, p["density"], p["gamma"]))

    return task_vector_merge(tensors, base, per_model, params, sparsify=sparsify, elect=elect)


_MODEL = {"weight": WEIGHT, "density": DENSITY, "gamma": GAMMA}


@register(
    "breadcrumbs",
    model_params=_MODEL,
    global_params={"normalize": NORMALIZE_FALSE, "lambda": LAMBDA, "int8_mask": INT8_MASK},
)
def breadcrumbs(tensors, base, per_model, params, rng) -> torch.Tensor:
    return _breadcrumbs(tensors, base, per_model, params, elect=False)


@register(
    "breadcrumbs_ties",
    model_params=_MODEL,
    global_params={"normalize": NORMALIZE_TRUE, "lambda": LAMBDA, "int8_mask": INT8_MASK},
)
def breadcrumbs_ties(tensors, base, per_model, params, rng) -> torch.Tensor:
    return _breadcrumbs(tensors, base, per_model, params, elect=True)
