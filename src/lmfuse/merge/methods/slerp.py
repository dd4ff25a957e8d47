"""Spherical linear interpolation of two models (Shoemake 1985, "Animating rotation with quaternion
curves", SIGGRAPH; used for LLM merging since mergekit).

Per tensor, on flattened copies a (the base, t = 0) and b (the other model, t = 1)::

    Ω = arccos(⟨a/|a|, b/|b|⟩)
    θ = sin((1 − t) Ω) / sin Ω · a + sin(t Ω) / sin Ω · b

applied to the un-normalised tensors. Nearly colinear tensors (|cos Ω| > 0.9995) fall back to linear
interpolation (1 − t) a + t b, where the formula above is numerically unstable. ``t`` is usually a
gradient over layers with different values per filter (``self_attn``, ``mlp``).
"""

from __future__ import annotations

import math

import torch

from lmfuse.merge.methods import REQUIRED, Param, register

COLINEAR = 0.9995
"""|cos Ω| above which SLERP falls back to linear interpolation."""


def slerp_tensors(a: torch.Tensor, b: torch.Tensor, t: float, dim: int | None = None) -> torch.Tensor:
    """SLERP from ``a`` (t = 0) to ``b`` (t = 1), over the whole tensor (``dim=None``) or along ``dim``
    (each vector along ``dim`` interpolated on its own, e.g. rows or columns of a matrix)."""
    if dim is None:
        return _slerp_flat(a, b, t)
    a_m, b_m = a.movedim(dim, -1), b.movedim(dim, -1)
    eps = 1e-8
    na = a_m / a_m.norm(dim=-1, keepdim=True).clamp_min(eps)
    nb = b_m / b_m.norm(dim=-1, keepdim=True).clamp_min(eps)
    dot = (na * nb).sum(dim=-1, keepdim=True).clamp(-1.0, 1.0)
    omega = torch.arccos(dot)
    sin = torch.sin(omega)
    colinear = dot.abs() > COLINEAR
    safe = torch.where(colinear, torch.ones_like(sin), sin)
    s0 = torch.where(colinear, torch.full_like(sin, 1 - t), torch.sin((1 - t) * omega) / safe)
    s1 = torch.where(colinear, torch.full_like(sin, t), torch.sin(t * omega) / safe)
    return (s0 * a_m + s1 * b_m).movedim(-1, dim)


def _slerp_flat(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    eps = 1e-8
    na = float(a.norm())
    nb = float(b.norm())
    dot = float((a.reshape(-1) @ b.reshape(-1)) / (max(na, eps) * max(nb, eps)))
    dot = max(-1.0, min(1.0, dot))
    if abs(dot) > COLINEAR:
        return (1 - t) * a + t * b
    omega = math.acos(dot)
    sin = math.sin(omega)
    return math.sin((1 - t) * omega) / sin * a + math.sin(t * omega) / sin * b


@register(
    "slerp",
    global_params={"t": Param(REQUIRED, low=0.0, high=1.0, doc="0 = base model, 1 = the other")},
    base="required",
    min_models=1,
    max_models=1,
)
def slerp(tensors, base, per_model, params, rng) -> torch.Tensor:
    return slerp_tensors(base, tensors[0], float(params["t"]))
