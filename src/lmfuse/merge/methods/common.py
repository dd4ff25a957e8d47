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

    Exactly k entries are kept; among entries tied in magnitude at the cut, ``torch.topk`` decides.
    """
    return top_mask(tau.abs(), int(density * tau.numel()))


def top_mask(magnitude: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask of the ``k`` largest entries of ``magnitude`` (chosen by ``torch.topk``, as above).

    On CPU ``topk`` holds a (value, index) pair for every entry while it runs (16 bytes each): the
    mask is allocated only after it returns, and only its indices are kept that long.
    """
    n = magnitude.numel()
    if k >= n:
        return torch.ones_like(magnitude, dtype=torch.bool)
    if k <= 0:
        return torch.zeros_like(magnitude, dtype=torch.bool)
    indices = torch.topk(magnitude.reshape(-1), k, sorted=False).indices
    mask = torch.zeros(n, dtype=torch.bool, device=magnitude.device)
    mask[indices] = True
    del indices
    return mask.reshape(magnitude.shape)


def trim_(tau: torch.Tensor, density: float) -> torch.Tensor:
    """``tau * magnitude_mask(tau, density)`` with the same bits, computed in place.

    The magnitudes are taken in place and the signs kept aside as bits (a quarter of a float32
    copy), so ``topk`` runs with one full copy of ``tau`` fewer around it; the kept entries then get
    their signs back (negation is exact, and ``signbit`` restores −0 too).
    """
    k = int(density * tau.numel())
    if k >= tau.numel():
        return tau
    negative = torch.signbit(tau)
    mask = top_mask(tau.abs_(), k)
    tau.mul_(mask)
    del mask
    flat, neg = tau.reshape(-1), negative.reshape(-1)
    for start in range(0, flat.numel(), CHUNK):
        block, block_neg = flat[start : start + CHUNK], neg[start : start + CHUNK]
        block.copy_(torch.where(block_neg, block.neg(), block))
    return tau


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
    total = torch.zeros_like(taus[0])
    for w_i, tau in zip(weights, taus, strict=True):
        total.add_(tau, alpha=w_i)
    elected = total.sign_()  # the running sum becomes the elected sign, in place
    merged, divisor = torch.zeros_like(total), torch.zeros_like(total)
    for i, w_i in enumerate(weights):
        _fold_agreeing(taus[i].mul_(w_i), w_i, elected, merged, divisor)
        taus[i] = None
    del elected, total
    if normalize:
        divisor.masked_fill_(divisor.abs() < 1e-12, 1.0)
        merged.div_(divisor)
    del divisor
    return merged.mul_(lam).add_(base() if callable(base) else base)


def _fold_agreeing(
    weighted: torch.Tensor, w_i: float, elected: torch.Tensor, merged: torch.Tensor, divisor: torch.Tensor
) -> None:
    """merged += w_i τ_i where its sign is the elected one; divisor += w_i there (block by block).

    Every step is exact or one rounding per entry, so the blocks give the bits of whole-tensor ops.
    """
    flat = [t.reshape(-1) for t in (weighted, elected, merged, divisor)]
    for start in range(0, weighted.numel(), CHUNK):
        w, e, m, d = (t[start : start + CHUNK] for t in flat)
        keep = torch.sign(w) == e
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
