"""Task arithmetic (Ilharco et al. 2023, "Editing models with task arithmetic", ICLR).

    θ = θ_b + λ · Σ_i w_i τ_i,   τ_i = θ_i − θ_b

divided by Σ w_i when ``normalize: true`` (default false); λ (``lambda``) defaults to 1.
"""

from __future__ import annotations

import torch

from lmfuse.merge.methods import INT8_MASK, LAMBDA, NORMALIZE_FALSE, WEIGHT, register
from lmfuse.merge.methods.common import task_vector_merge


@register(
    "task_arithmetic",
    model_params={"weight": WEIGHT},
    global_params={"normalize": NORMALIZE_FALSE, "lambda": LAMBDA, "int8_mask": INT8_MASK},
)
def task_arithmetic(tensors, base, per_model, params, rng) -> torch.Tensor:
    return task_vector_merge(tensors, base, per_model, params, sparsify=None, elect=False)
