"""NuSLERP: SLERP with weights instead of ``t``, optionally of task vectors and row- or column-wise
(mergekit's "nuslerp"; SLERP after Shoemake 1985).

Two models A, B with weights w_A, w_B: t = w_B / (w_A + w_B), then

    θ = slerp(θ_A, θ_B, t)                     without a base model
    θ = θ_b + slerp(τ_A, τ_B, t)               with ``base_model`` (τ = θ − θ_b)

``nuslerp_flatten: true`` (default) interpolates each tensor as one vector; ``false`` interpolates each
column (or each row with ``nuslerp_row_wise: true``) on its own.
"""

from __future__ import annotations

import torch

from lmfuse.merge.methods import WEIGHT, Param, register
from lmfuse.merge.methods.slerp import slerp_tensors


@register(
    "nuslerp",
    model_params={"weight": WEIGHT},
    global_params={
        "nuslerp_flatten": Param(True, "flag", doc="interpolate each tensor as one flat vector"),
        "nuslerp_row_wise": Param(False, "flag", doc="with flatten false: rows instead of columns"),
    },
    base="optional",
    min_models=2,
    max_models=2,
)
def nuslerp(tensors, base, per_model, params, rng) -> torch.Tensor:
    w_a, w_b = (p["weight"] for p in per_model)
    if abs(w_a + w_b) < 1e-12:
        raise ValueError("nuslerp: the two weights sum to 0")
    t = w_b / (w_a + w_b)
    a, b = tensors
    if base is not None:
        a, b = a - base, b - base
    dim = None if params["nuslerp_flatten"] or a.dim() < 2 else -1 if params["nuslerp_row_wise"] else -2
    out = slerp_tensors(a, b, t, dim=dim)
    return out if base is None else base + out
