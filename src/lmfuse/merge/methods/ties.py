"""TIES-merging: trim, elect sign, disjoint merge (Yadav et al. 2023, "TIES-Merging: resolving
interference when merging models", NeurIPS).

1. Trim: keep the ``k = int(d_i · numel)`` largest-magnitude entries of each τ_i = θ_i − θ_b.
2. Elect: per entry, the sign of Σ_i w_i τ̂_i (the sign carrying the most weighted mass).
3. Disjoint merge: Σ_i w_i τ̂_i over the entries whose sign agrees with the elected one, divided
   (``normalize: true``, default) by the sum of the weights w_i of exactly those entries.

    θ = θ_b + λ · merged

Sign election means that even with density 1 TIES equals task arithmetic only where the models'
task vectors agree in sign (always with a single model); entries of the minority sign are dropped.

Where the formula leaves a choice, lmfuse makes mergekit's, so the same recipe gives the same bits
(``benchmarks/README.md``; tests in ``tests/merge/test_methods.py``):

- ties at the trim cut: exactly k entries are kept, the first k of ``torch.sort(|τ_i|,
  descending=True)``; among entries equal to the k-th magnitude that is the sort's order (torch
  leaves it unspecified; it is deterministic for a given torch build);
- an election of exactly zero mass (Σ = ±0) elects +, where the paper's sgn(0) = 0 would keep the
  base;
- arithmetic, in the working dtype: weights rounded to it, each w_i τ̂_i rounded once, the terms
  added in model order (no fused multiply-add), so the elected sign is that of the rounded sum.
"""

from __future__ import annotations

import torch

from lmfuse.merge.methods import DENSITY, INT8_MASK, LAMBDA, NORMALIZE_TRUE, WEIGHT, register
from lmfuse.merge.methods.common import task_vector_merge, trim_


def trim(tau: torch.Tensor, p: dict, index: int) -> torch.Tensor:
    """TIES' trim: zero all but the top ``density`` fraction of ``tau`` by magnitude (in place)."""
    return trim_(tau, p["density"])


@register(
    "ties",
    model_params={"weight": WEIGHT, "density": DENSITY},
    global_params={"normalize": NORMALIZE_TRUE, "lambda": LAMBDA, "int8_mask": INT8_MASK},
)
def ties(tensors, base, per_model, params, rng) -> torch.Tensor:
    return task_vector_merge(tensors, base, per_model, params, sparsify=trim, elect=True)
