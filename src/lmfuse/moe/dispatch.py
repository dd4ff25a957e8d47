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
        h = _GroupedLinear.apply(xs, w_in, offs)
        return _GroupedLinear.apply(_activate(h, activation), w_out, offs)
    outs = []
    chunks = torch.split(xs, counts.tolist())
    for x_e, wi, wo in zip(chunks, w_in.unbind(0), w_out.unbind(0), strict=True):
        if x_e.shape[0]:
            outs.append(F.linear(_activate(F.linear(x_e, wi), activation), wo))
    return torch.cat(outs) if outs else xs.new_zeros(0, w_out.shape[1])


class _GroupedLinear(torch.autograd.Function):
    """``x_e @ W_e^T`` for each expert's row segment of ``x`` ``(N, in)``, ``W`` ``(E, out, in)``.

    The backward computes the weight gradient as one 2-D × 2-D ``grouped_mm`` straight into ``W``'s
    ``(E, out, in)`` layout; autograd through ``W.transpose`` would produce it transposed and then copy it.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, offs: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, w, offs)
        return F.grouped_mm(x, w.transpose(1, 2), offs=offs)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, w, offs = ctx.saved_tensors
        if x.shape[0] == 0:  # grouped_mm rejects the (out, 0) transpose of an empty gradient
            return x.new_zeros(x.shape), torch.zeros_like(w), None
        grad = grad.contiguous()
        grad_x = F.grouped_mm(grad, w, offs=offs) if ctx.needs_input_grad[0] else None
        grad_w = F.grouped_mm(grad.t(), x, offs=offs) if ctx.needs_input_grad[1] else None
        return grad_x, grad_w, None


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
    ys = expert_ffn(_ToExperts.apply(x, rows, where, k), counts, w_in, w_out, activation, backend)
    return combine(ys, where, weights.to(x.dtype), rows)


def combine(ys: torch.Tensor, where: torch.Tensor, weights: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Back to token order and mixed: ``ys`` ``(N, M)`` expert outputs in sorted order, ``where`` ``(S·k,)``
    each pair's row (``N`` = dropped), ``rows`` ``(N,)`` each sorted row's pair, ``weights`` ``(S, k)``
    → ``(S, M)``. The mix is one batched ``(1, k) @ (k, M)`` product per token.
    """
    s, k = weights.shape
    per_choice = _FromExperts.apply(ys, where, rows).view(s, k, ys.shape[-1])
    return torch.bmm(weights.unsqueeze(1), per_choice).squeeze(1)


def _pad_dropped(t: torch.Tensor, pairs: int) -> torch.Tensor:
    """``t`` ``(N, M)`` plus a zero row at index ``N`` when pairs were dropped (``N < pairs``)."""
    return t if t.shape[0] >= pairs else torch.cat([t, t.new_zeros(1, t.shape[1])])


class _ToExperts(torch.autograd.Function):
    """``x[rows // k]``: tokens in expert order (``index_select``: far faster than indexing on CPU). Backward gathers each token's ``k`` row gradients and sums
    them (``where`` is the inverse map), instead of a scatter-add."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, rows: torch.Tensor, where: torch.Tensor, k: int) -> torch.Tensor:
        ctx.save_for_backward(where)
        ctx.k = k
        return x.index_select(0, rows // k)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (where,) = ctx.saved_tensors
        grad = _pad_dropped(grad, where.numel())
        return grad.index_select(0, where).view(-1, ctx.k, grad.shape[1]).sum(1), None, None, None


class _FromExperts(torch.autograd.Function):
    """``ys[where]`` with a zero row for dropped pairs: ``(S·k, M)`` in (token, choice) order. Backward is
    the inverse gather ``grad[rows]`` (each sorted row has exactly one pair)."""

    @staticmethod
    def forward(ctx, ys: torch.Tensor, where: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(rows)
        return _pad_dropped(ys, where.numel()).index_select(0, where)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (rows,) = ctx.saved_tensors
        return grad.index_select(0, rows), None, None
