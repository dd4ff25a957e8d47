"""Linear merge, the "model soup" (Wortsman et al. 2022, "Model soups: averaging weights of multiple
fine-tuned models improves accuracy without increasing inference time", ICML).

    θ = Σ_i w_i θ_i / Σ_i w_i      (normalize: true, the default)
    θ = Σ_i w_i θ_i                (normalize: false)

No base model is used: ``base_model`` only names the config and tokenizer source; list it under
``models`` to give it a weight.
"""

from __future__ import annotations

import torch

from lmfuse.merge.methods import NORMALIZE_TRUE, WEIGHT, register


@register(
    "linear", model_params={"weight": WEIGHT}, global_params={"normalize": NORMALIZE_TRUE}, base="unused"
)
def linear(tensors, base, per_model, params, rng) -> torch.Tensor:
    weights = [p["weight"] for p in per_model]
    out = torch.zeros_like(tensors[0])
    for w, t in zip(weights, tensors, strict=True):
        out.add_(t, alpha=w)  # in place: no temporary per model
    total = sum(weights)
    if params["normalize"]:
        if abs(total) < 1e-12:
            raise ValueError("linear: the weights sum to 0; cannot normalize (set normalize: false)")
        out.div_(total)
    return out
