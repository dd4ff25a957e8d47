"""DARE: drop and rescale (Yu et al. 2024, "Language models are Super Mario: absorbing abilities from
homologous models as a free lunch", ICML).

Each entry of τ_i = θ_i − θ_b is kept with probability d_i (``density``) and, with ``rescale: true``
(default), kept entries are divided by d_i so that E[τ̃_i] = τ_i. Then

    dare_linear:  θ = θ_b + λ · Σ_i w_i τ̃_i                 (÷ Σ w_i if normalize, default false)
    dare_ties:    θ = θ_b + λ · TIES' disjoint merge of w_i τ̃_i  (sign election, normalize default true)

The masks are seeded by ``random_seed``, the tensor name and the model's index, so a merge is
reproducible and independent of the order tensors are processed in or the device used.

``rescale`` is the paper's ÷ d_i, which makes each entry's expectation τ_i. mergekit 0.1.5 instead
scales each tensor's kept entries by Σ|τ_i| / Σ|τ̃_i| (keeping its L1 norm; observed, see
``benchmarks/README.md``), so beyond the different random masks its rescaled values differ slightly.
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
    TensorRng,
    register,
)  # fmt: skip
from lmfuse.merge.methods.common import random_mask, task_vector_merge


def drop_and_rescale(tau: torch.Tensor, density: float, rescale: bool, rng: TensorRng, index: int):
    """DARE's sparsification of one task vector, in place (shape kept)."""
    if density >= 1.0:
        return tau
    tau.mul_(random_mask(tau, density, rng, index))
    return tau.div_(density) if rescale and density > 0 else tau


def _dare(tensors, base, per_model, params, rng, elect: bool) -> torch.Tensor:
    def sparsify(tau, p, i):
        return drop_and_rescale(tau, p["density"], params["rescale"], rng, i)

    return task_vector_merge(tensors, base, per_model, params, sparsify=sparsify, elect=elect)


_MODEL = {"weight": WEIGHT, "density": DENSITY}
_COMMON = {"lambda": LAMBDA, "rescale": RESCALE, "int8_mask": INT8_MASK}


@register(
    "dare_linear", model_params=_MODEL, global_params={"normalize": NORMALIZE_FALSE, **_COMMON}, random=True
)
def dare_linear(tensors, base, per_model, params, rng) -> torch.Tensor:
    return _dare(tensors, base, per_model, params, rng, elect=False)


@register(
    "dare_ties", model_params=_MODEL, global_params={"normalize": NORMALIZE_TRUE, **_COMMON}, random=True
)
def dare_ties(tensors, base, per_model, params, rng) -> torch.Tensor:
    return _dare(tensors, base, per_model, params, rng, elect=True)
