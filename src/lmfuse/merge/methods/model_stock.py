"""Model Stock (Jang et al. 2024, "Model Stock: all we need is just a few fine-tuned models", ECCV).

Per tensor, with k ≥ 2 fine-tuned models and their task vectors τ_i = θ_i − θ_b: cos θ is the mean
cosine between pairs of task vectors, and

    t = k cos θ / (1 + (k − 1) cos θ)
    θ = t · mean_i(θ_i) + (1 − t) · θ_b

Pairs involving an all-zero task vector have no angle and are skipped; with no pair left, t = 1.
"""

from __future__ import annotations

import itertools

import torch

from lmfuse.merge.methods import register


def interpolation_ratio(taus: list[torch.Tensor]) -> float:
    """Model Stock's t from the task vectors of one tensor."""
    flat = [t.reshape(-1) for t in taus]
    norms = [float(f.norm()) for f in flat]
    cosines = [
        float(flat[i] @ flat[j]) / (norms[i] * norms[j])
        for i, j in itertools.combinations(range(len(flat)), 2)
        if norms[i] > 0 and norms[j] > 0
    ]
    if not cosines:
        return 1.0
    k = len(taus)
    cos = max(-1.0, min(1.0, sum(cosines) / len(cosines)))
    denom = 1 + (k - 1) * cos
    return 1.0 if abs(denom) < 1e-12 else k * cos / denom


@register("model_stock", min_models=2)
def model_stock(tensors, base, per_model, params, rng) -> torch.Tensor:
    t = interpolation_ratio([x - base for x in tensors])
    mean = torch.stack(list(tensors)).mean(dim=0)
    return t * mean + (1 - t) * base
