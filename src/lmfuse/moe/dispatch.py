"""Fast dispatch: sort the routed (token, choice) pairs by expert, run every expert in one grouped
matmul, then combine by reshaping to ``(tokens, k)`` and summing.

``grouped`` uses ``torch.nn.functional.grouped_mm`` (fp32/bf16/fp16 on CPU); ``loop`` runs the same sorted
segments through a loop over experts, with the stacked weights ``unbind``-ed once (indexing ``W[e]``
inside the loop would zero-fill a full-size gradient per expert). Dropped choices are never computed and
contribute exactly 0. The capacity mode uses the same machinery: it only changes ``keep``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

GROUPED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def pick_backend(backend: str, dtype: torch.dtype, widths: tuple[int, ...] = ()) -> str:
    """``auto`` → ``grouped`` where ``grouped_mm`` supports ``dtype`` and row strides, else ``loop``.

    ``grouped_mm`` needs fp32/bf16/fp16 (no fp64) and rows of a multiple of 16 bytes (``widths``: the
    hidden and expert widths).
    """
    supported = hasattr(F, "grouped_mm") and dtype in GROUPED_DTYPES
    aligned = all(w * dtype.itemsize % 16 == 0 for w in widths)
    if backend == "auto":
        return "grouped" if supported and aligned else "loop"
    if backend == "grouped" and not (supported and aligned):
        raise ValueError(
            f"backend 'grouped' needs dtype in {GROUPED_DTYPES} and widths {widths} that are multiples of "
            f"16 bytes, found {dtype}; use backend 'loop' or 'auto'"
        )
    return backend


def sort_by_expert(indices: torch.Tensor, keep: torch.Tensor, num_experts: int):
    """Order of the kept ``(token, choice)`` pairs grouped by expert.

    ``indices``, ``keep``: ``(S, k)``. Returns ``rows`` ``(N,)`` flat pair ids (token·k + choice) in expert
    order, ``counts`` ``(E,)`` pairs per expert, and ``where`` ``(S·k,)``: each pair's row in the sorted
    batch, or ``N`` for dropped pairs (pointing at a zero row).
    """
    experts = torch.where(keep, indices, num_experts).reshape(-1)
    order = torch.argsort(experts, stable=True)
    counts = torch.bincount(experts, minlength=num_experts + 1)
    n = int(counts[:num_experts].sum())
    where = torch.empty_like(order)
    where[order] = torch.arange(order.numel(), device=order.device)
    return order[:n], counts[:num_experts], where.clamp_max(n)


def expert_ffn(
    xs: torch.Tensor,
    counts: torch.Tensor,
    w_in: torch.Tensor,
    w_out: torch.Tensor,
    activation: str,
    backend: str = "auto",
) -> torch.Tensor:
    """Run ``xs`` ``(N, M)``, sorted by expert with ``counts`` ``(E,)``, through stacked experts.

    ``w_in``: ``(E, 2I, M)`` (swiglu: gate rows then up rows) or ``(E, I, M)`` (relu); ``w_out``: ``(E, M, I)``.
    Returns ``(N, M)``.
    """
    backend = pick_backend(backend, xs.dtype, (w_out.shape[1], w_out.shape[2]))
    if backend == "grouped":
        offs = torch.cumsum(counts, 0).to(torch.int32)
        h = F.grouped_mm(xs, w_in.transpose(1, 2), offs=offs)
        h = _activate(h, activation)
        return F.grouped_mm(h, w_out.transpose(1, 2), offs=offs)
    outs = []
    chunks = torch.split(xs, counts.tolist())
    for x_e, wi, wo in zip(chunks, w_in.unbind(0), w_out.unbind(0), strict=True):
        if x_e.shape[0]:
            outs.append(F.linear(_activate(F.linear(x_e, wi), activation), wo))
    return torch.cat(outs) if outs else xs.new_zeros(0, w_out.shape[1])


def _activate(h: torch.Tensor, activation: str) -> torch.Tensor:
    if activation == "swiglu":
        gate, up = h.chunk(2, dim=-1)
        return F.silu(gate) * up
    return F.relu(h)


def dispatch_combine(
    x: torch.Tensor,
    indices: torch.Tensor,
    weights: torch.Tensor,
    keep: torch.Tensor,
    w_in: torch.Tensor,
    w_out: torch.Tensor,
    activation: str,
    backend: str = "auto",
) -> torch.Tensor:
    """``y_s = Σ_j weights[s, j] · expert_{indices[s, j]}(x_s)`` over kept choices.

    ``x``: ``(S, M)``; ``indices``, ``weights``, ``keep``: ``(S, k)``. Returns ``(S, M)`` in ``x.dtype``.
    """
    s, k = indices.shape
    rows, counts, where = sort_by_expert(indices, keep, w_in.shape[0])
    ys = expert_ffn(x[rows // k], counts, w_in, w_out, activation, backend)
    ys = torch.cat([ys, ys.new_zeros(1, ys.shape[1])])
    per_choice = ys[where].view(s, k, -1)
    return (per_choice * weights.to(x.dtype).unsqueeze(-1)).sum(1)
