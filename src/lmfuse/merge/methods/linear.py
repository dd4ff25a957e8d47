"""Linear merge, the "model soup" (Wortsman et al. 2022, "Model soups: averaging weights of multiple
fine-tuned models improves accuracy without increasing inference time", ICML).

    θ = Σ_i w_i θ_i / Σ_i w_i      (normalize: true, the default)
    θ = Σ_i w_i θ_i                (normalize: false)

No base model is used: ``base_model`` only names the config and tokenizer source; list it under
``models`` to give it a weight.
"""

from __future__ import annotations

import torch

from lmfuse.merge.methods import NORMALIZE_TRUE, WEIGHT, Owned, register


@register(
    "linear", model_params={"weight": WEIGHT}, global_params={"normalize": NORMALIZE_TRUE}, base="unused"
)
def linear(tensors, base, per_model, params, rng) -> torch.Tensor:
    weights = [p["weight"] for p in per_model]
    if isinstance(tensors, Owned):  # the first input becomes the sum: no fresh (page-faulted) buffer
        # w·x then + 0.0 has the bits of 0 + w·x (−0 becomes +0, as it does when added to zeros)
        out = tensors[0].mul_(weights[0]).add_(0.0)
        rest = zip(weights[1:], tensors[1:], strict=True)
    else:
        out = torch.zeros_like(tensors[0])
        rest = zip(weights, tensors, strict=True)
    for w, t in rest:
        out.add_(t, alpha=w)  # in place: no temporary per model
    total = sum(weights)
    if params["normalize"]:
        if abs(total) < 1e-12:
            raise ValueError("linear: the weights sum to 0; cannot normalize (set normalize: false)")
        out.div_(total)
    return out
