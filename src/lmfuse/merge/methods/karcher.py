"""Karcher mean: the weighted Riemannian (Fréchet) mean on the unit sphere, SLERP generalised to N
models (Karcher 1977, "Riemannian center of mass and mollifier smoothing"; Grove & Karcher 1973).

Per tensor x_i (flattened), u_i = x_i / |x_i|. Start from μ = normalise(Σ w_i u_i) and iterate

    v_i = θ_i / sin θ_i · (u_i − cos θ_i · μ),   cos θ_i = ⟨μ, u_i⟩        (log map at μ)
    T = Σ w_i v_i / Σ w_i;  stop when |T| < tol
    μ ← cos |T| · μ + sin |T| · T / |T|                                   (exp map)

for at most ``max_iter`` steps; the result is μ scaled by the weighted mean norm Σ w_i |x_i| / Σ w_i.
"""

from __future__ import annotations

import math

import torch

from lmfuse.merge.methods import WEIGHT, Param, register


def karcher_mean(xs: list[torch.Tensor], weights: list[float], max_iter: int, tol: float) -> torch.Tensor:
    shape = xs[0].shape
    flat = [x.reshape(-1) for x in xs]
    norms = [float(f.norm()) for f in flat]
    total = sum(weights)
    scale = sum(w * n for w, n in zip(weights, norms, strict=True)) / total
    pairs = [(w, f / n) for w, f, n in zip(weights, flat, norms, strict=True) if n > 0]
    if not pairs:
        return torch.zeros_like(xs[0])
    mu = sum(w * u for w, u in pairs)
    mu = mu / mu.norm().clamp_min(1e-30)
    for _ in range(max_iter):
        tangent = torch.zeros_like(mu)
        for w, u in pairs:
            cos = max(-1.0, min(1.0, float(mu @ u)))
            theta = math.acos(cos)
            if theta > 1e-12:
                tangent += w * (theta / math.sin(theta)) * (u - cos * mu)
        tangent /= sum(w for w, _ in pairs)
        step = float(tangent.norm())
        if step < tol:
            break
        mu = math.cos(step) * mu + math.sin(step) * tangent / step
    return (mu * scale).reshape(shape)


@register(
    "karcher",
    model_params={"weight": WEIGHT},
    global_params={
        "max_iter": Param(10, "integer", low=1, doc="most fixed-point iterations"),
        "tol": Param(1e-5, low=0.0, doc="stop when the tangent step is shorter"),
    },
    base="unused",
    min_models=1,
)
def karcher(tensors, base, per_model, params, rng) -> torch.Tensor:
    weights = [p["weight"] for p in per_model]
    return karcher_mean(list(tensors), weights, int(params["max_iter"]), float(params["tol"]))
