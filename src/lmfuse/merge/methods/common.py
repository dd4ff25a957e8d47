"""Pieces shared by the task-vector methods: sparsify a task vector, elect signs, combine.

Notation: base θ_b, models θ_i, task vectors τ_i = θ_i − θ_b, weights w_i, densities d_i. Every
function takes and returns tensors of one shape (the tensor being merged), in the working dtype.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from lmfuse.merge.methods import Owned, TensorRng

CHUNK = 1 << 22
"""Entries per block of exact elementwise steps done block by block (keeps their temporaries small)."""


Sparsify = Callable[[torch.Tensor, dict, int], torch.Tensor]
"""``(τ_i, model parameters, model index) -> sparsified τ_i``; may overwrite τ_i (it is the caller's
own work tensor) and usually returns it."""


def magnitude_mask(tau: torch.Tensor, density: float) -> torch.Tensor:
    """Keep the ``int(density · numel)`` largest-magnitude entries (TIES' trim); bool, shape of ``tau``.

    Exactly k entries are kept; among entries tied in magnitude at the cut, see ``top_mask``.
    """
    return top_mask(tau.abs(), int(density * tau.numel()), overwrite=True)


def top_mask(magnitude: torch.Tensor, k: int, *, overwrite: bool = False) -> torch.Tensor:
    """Bool mask of the first ``k`` entries of ``torch.sort(magnitude, descending=True)``.

    Entries larger than the k-th are always kept; among entries equal to it, the kept ones are
    those the (unstable) sort puts first. torch does not specify that order, but it is deterministic
    for a given torch build, and it is the choice mergekit 0.1.5's trim makes (observed: with the
    same torch, TIES outputs agree bit for bit; ``benchmarks/README.md``). ``topk`` picks other tied
    entries, a stable order others again, and a threshold keeps all of them or none.

    ``overwrite``: ``magnitude`` is the caller's scratch; it is sorted in place (no copy). Peak:
    the int64 permutation (two float32 copies' worth) and then the mask.
    """
    n = magnitude.numel()
    if k >= n:
        return torch.ones_like(magnitude, dtype=torch.bool)
    if k <= 0:
        return torch.zeros_like(magnitude, dtype=torch.bool)
    values = magnitude.reshape(-1)
    if not overwrite and values.data_ptr() == magnitude.data_ptr():
        values = values.clone()  # a view of the caller's tensor: sort a copy
    order = torch.empty(0, dtype=torch.long, device=magnitude.device)
    torch.sort(values, descending=True, out=(values, order))
    del values
    mask = torch.zeros(n, dtype=torch.bool, device=magnitude.device)
    mask[order[:k]] = True
    del order
    return mask.reshape(magnitude.shape)


def trim_(tau: torch.Tensor, density: float) -> torch.Tensor:
    """``tau * magnitude_mask(tau, density)``, computed in place (the magnitudes are sorted in a
    scratch copy that is freed before the mask is applied)."""
    if int(density * tau.numel()) >= tau.numel():
        return tau
    return tau.mul_(magnitude_mask(tau, density))


def random_mask(tau: torch.Tensor, keep: float | torch.Tensor, rng: TensorRng, index: int) -> torch.Tensor:
    """Keep each entry with probability ``keep`` (a number or a tensor of probabilities); bool."""
    return rng.uniform(index, tau) < keep


def combine(
    base: torch.Tensor | Callable[[], torch.Tensor],
    taus: list[torch.Tensor | None],
    weights: Sequence[float],
    *,
    elect: bool,
    normalize: bool,
    lam: float,
) -> torch.Tensor:
    """θ_b + λ · merge(w_i τ_i): a plain sum, or TIES' disjoint merge when ``elect``.

    Without election: Σ w_i τ_i, divided by Σ w_i if ``normalize``. With election: Σ over the entries
    whose sign agrees with the elected sign, divided (if ``normalize``) by the sum of the weights of
    exactly those entries (a zero divisor counts as 1, i.e. the entry stays 0). The elected sign is
    TIES' "sum" election: the sign of Σ w_i τ_i, the side carrying the most weighted mass.

    Exactly, in the working dtype: the weights are rounded to it, each term p_i = w_i τ_i is
    rounded once and the p_i are added in model order (no fused multiply-add), and an election of
    exactly zero mass (Σ p_i = ±0, e.g. 0.5 · 1 + 0.5 · (−1)) elects +, as mergekit does; the paper's
    sgn(0) = 0 would drop both sides of a perfectly balanced conflict and keep the base. A zero term
    agrees with neither sign, so it adds nothing to the divisor.

    ``taus`` are this function's to overwrite: each is dropped from the list once folded in, so memory
    holds the remaining task vectors and two or three work tensors, never a ``(models, ...)`` stack.
    ``base`` may be a function that reads it (called once, for the final sum).
    """
    if not elect:
        merged = torch.zeros_like(taus[0])
        for i, w_i in enumerate(weights):
            merged.add_(taus[i], alpha=w_i)
            taus[i] = None
        if normalize:
            total = sum(weights)
            merged.div_(total if abs(total) >= 1e-12 else 1.0)
        return merged.mul_(lam).add_(base() if callable(base) else base)  # = base + lam * merged
    weights = [float(torch.tensor(w_i, dtype=taus[0].dtype)) for w_i in weights]  # in the working dtype
    for i, w_i in enumerate(weights):
        taus[i].mul_(w_i)  # the weighted terms p_i = fl(w_i τ_i), each rounded once
    total = taus[0].clone()
    for p in taus[1:]:
        total.add_(p)  # Σ p_i in model order: rounded terms added, no fused multiply-add
    positive = total >= 0  # elected sign: + where Σ ≥ 0, an exact 0 (or −0) included
    del total
    merged, divisor = torch.zeros_like(taus[0]), torch.zeros_like(taus[0])
    for i, w_i in enumerate(weights):
        _fold_agreeing(taus[i], w_i, positive, merged, divisor)
        taus[i] = None
    del positive
    if normalize:
        divisor.masked_fill_(divisor.abs() < 1e-12, 1.0)
        merged.div_(divisor)
    del divisor
    return merged.mul_(lam).add_(base() if callable(base) else base)


def _fold_agreeing(
    weighted: torch.Tensor, w_i: float, positive: torch.Tensor, merged: torch.Tensor, divisor: torch.Tensor
) -> None:
    """merged += w_i τ_i where its sign is the elected one; divisor += w_i there (block by block).

    A zero (or NaN) term agrees with neither sign. Every step is exact or one rounding per entry,
    so the blocks give the bits of whole-tensor ops.
    """
    flat = [t.reshape(-1) for t in (weighted, positive, merged, divisor)]
    for start in range(0, weighted.numel(), CHUNK):
        w, e, m, d = (t[start : start + CHUNK] for t in flat)
        keep = torch.where(e, w > 0, w < 0)
        m.add_(w.mul_(keep))
        d.add_(keep, alpha=w_i)


def task_vector_merge(
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor,
    per_model: Sequence[dict],
    params: dict,
    sparsify: Sparsify | None,
    elect: bool,
) -> torch.Tensor:
    """The generalised task-arithmetic pipeline: τ_i, sparsify each (in place), then ``combine``.

    With an ``Owned`` list each input becomes its task vector in place and leaves the list, so the
    peak is the inputs plus the work tensors of one model at a time.
    """
    owned = isinstance(tensors, Owned)
    taus: list[torch.Tensor | None] = []
    for i in range(len(per_model)):
        taus.append(tensors[i].sub_(base) if owned else tensors[i] - base)
        if owned:
            tensors[i] = None
    reload = tensors.reload_base if owned else None
    if reload is not None:
        base.set_()  # its memory is free while the task vectors are worked on; re-read at the end
    if sparsify is not None:
        for i, p in enumerate(per_model):
            taus[i] = sparsify(taus[i], p, i)
    return combine(
        base if reload is None else reload,
        taus,
        [p["weight"] for p in per_model],
        elect=elect,
        normalize=params["normalize"],
        lam=params["lambda"],
    )
