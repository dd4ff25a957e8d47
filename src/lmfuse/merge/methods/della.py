"""DELLA-merging: magnitude-based sampling (Deep et al. 2024, "DELLA-Merging: reducing interference in
model merging through magnitude-based sampling").

MagPrune, per row of τ_i (a 1-D tensor is one row): rank the entries by magnitude; the keep
probability rises linearly with rank from d − ε (smallest) to d + ε (largest), clamped to (0, 1];
keep each entry with its probability p and (``rescale: true``) divide kept entries by p, so that
E[τ̃] = τ. Then

    della:         TIES' sign election and disjoint merge of w_i τ̃_i (normalize default true)
    della_linear:  θ_b + λ Σ w_i τ̃_i                         (normalize default false)
"""

from __future__ import annotations

import torch

from lmfuse.merge.methods import (
    DENSITY,
    INT8_MASK,
    LAMBDA,
    NORMALIZE_FALSE,
    NORMALIZE_TRUE,
    RESCALE,
    WEIGHT,
    Param,
    TensorRng,
    register,
)  # fmt: skip
from lmfuse.merge.methods.common import task_vector_merge

EPSILON = Param(0.0, low=0.0, high=1.0, doc="keep probabilities span density ± epsilon")


def keep_probabilities(tau: torch.Tensor, density: float, epsilon: float) -> torch.Tensor:
    """Per-entry keep probability from its magnitude rank within its row; shape of ``tau``."""
    rows = tau.reshape(1, -1) if tau.dim() < 2 else tau.reshape(-1, tau.shape[-1])
    n = rows.shape[-1]
    ranks = torch.argsort(torch.argsort(rows.abs(), dim=-1), dim=-1).to(torch.float32)
    frac = ranks / max(n - 1, 1)  # 0 = smallest magnitude, 1 = largest
    p = (density - epsilon) + 2 * epsilon * frac
    return p.clamp(1e-6, 1.0).reshape(tau.shape)


def magprune(tau: torch.Tensor, density: float, epsilon: float, rescale: bool, rng: TensorRng, index: int):
    """DELLA's MagPrune of one task vector, in place (shape kept)."""
    if density >= 1.0 and epsilon == 0.0:
        return tau
    p = keep_probabilities(tau, density, epsilon).to(tau.device)
    tau.mul_(rng.uniform(index, tau) < p)  # in place: tau is the caller's work tensor
    return tau.div_(p.to(tau.dtype)) if rescale else tau


def _della(tensors, base, per_model, params, rng, elect: bool) -> torch.Tensor:
    def sparsify(tau, p, i):
        return magprune(tau, p["density"], p["epsilon"], params["rescale"], rng, i)

    return task_vector_merge(tensors, base, per_model, params, sparsify=sparsify, elect=elect)


_MODEL = {"weight": WEIGHT, "density": DENSITY, "epsilon": EPSILON}
_COMMON = {"lambda": LAMBDA, "rescale": RESCALE, "int8_mask": INT8_MASK}


@register("della", model_params=_MODEL, global_params={"normalize": NORMALIZE_TRUE, **_COMMON}, random=True)
def della(tensors, base, per_model, params, rng) -> torch.Tensor:
    return _della(tensors, base, per_model, params, rng, elect=True)


@register(
    "della_linear", model_params=_MODEL, global_params={"normalize": NORMALIZE_FALSE, **_COMMON}, random=True
)
def della_linear(tensors, base, per_model, params, rng) -> torch.Tensor:
    return _della(tensors, base, per_model, params, rng, elect=False)
