"""Dispatch: sort the routed (token, choice) pairs by expert, run the experts, sum back into token order.

``fused`` (the ``auto`` choice, ``fused.py``): per expert, gather its tokens, both projections, the weighted
``index_add``, with a hand-written per-expert backward. ``grouped``: each step for all experts at once
(``index_select``, ``torch.nn.functional.grouped_mm`` on fp32/bf16/fp16, weighted ``index_add``); ``loop``:
the same with a loop over ``unbind``-ed experts. Dropped choices are never computed and contribute exactly
0; the capacity mode uses the same machinery: it only changes ``keep``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lmfuse.moe.fused import fused_moe

GROUPED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def pick_backend(backend: str, dtype: torch.dtype, widths: tuple[int, ...] = ()) -> str:
    """``auto`` → ``fused`` (any dtype; the fastest on CPU in ``benchmarks/moe/run.py``).

    ``grouped_mm`` needs fp32/bf16/fp16 (no fp64) and rows of a multiple of 16 bytes (``widths``: the
    hidden and expert widths).
    """
    if backend in ("auto", "fused", "loop"):
        return "fused" if backend == "auto" else backend
    supported = hasattr(F, "grouped_mm") and dtype in GROUPED_DTYPES
    aligned = all(w * dtype.itemsize % 16 == 0 for w in widths)
    if backend == "grouped" and not (supported and aligned):
        raise ValueError(
            f"backend 'grouped' needs dtype in {GROUPED_DTYPES} and widths {widths} that are multiples of "
            f"16 bytes, found {dtype}; use backend 'loop' or 'auto'"
        )
    return backend


def sort_by_expert(indices: torch.Tensor, keep: torch.Tensor, num_experts: int):
    """Order of the kept ``(token, choice)`` pairs grouped by expert.

    ``indices``, ``keep``: ``(S, k)``. Returns ``rows`` ``(N,)`` flat pair ids (token·k + choice) in expert
    order (dropped pairs are not in it) and ``counts`` ``(E,)`` pairs per expert.
    """
    experts = torch.where(keep, indices, num_experts).reshape(-1)
    order = torch.argsort(experts, stable=True)
    counts = torch.bincount(experts, minlength=num_experts + 1)[:num_experts]
    return order[: int(counts.sum())], counts


def expert_ffn(
    xs: torch.Tensor,
    counts: torch.Tensor,
    w_in: torch.Tensor,
    w_out: torch.Tensor,
    activation: str,
    backend: str = "auto",
    row_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Run ``xs`` ``(N, M)``, sorted by expert with ``counts`` ``(E,)``, through stacked experts (``fused``
    here means the ``loop``: rows that arrive already gathered, as in expert parallelism).

    ``w_in``: ``(E, 2I, M)`` (swiglu: gate rows then up rows) or ``(E, I, M)`` (relu); ``w_out``: ``(E, M, I)``.
    ``row_weights`` ``(N,)`` scales each row's output (as transformers and the expert-parallel path do).
    Returns ``(N, M)``.
    """
    backend = pick_backend(backend, xs.dtype, (w_out.shape[1], w_out.shape[2]))
    if backend == "grouped":
        offs = torch.cumsum(counts, 0).to(torch.int32)
        h = _activate(_GroupedLinear.apply(xs, w_in, offs), activation)
        ys = _GroupedLinear.apply(h, w_out, offs)
    else:
        ys = _loop_ffn(xs, counts, w_in, w_out, activation)
    return ys if row_weights is None else ys * row_weights[:, None]


def _loop_ffn(xs, counts, w_in, w_out, activation) -> torch.Tensor:
    """One ``F.linear`` pair per expert that has rows (``unbind`` once: indexing ``W[e]`` would zero-fill a
    full-size gradient per expert); experts without rows cost nothing."""
    outs = []
    chunks = torch.split(xs, counts.tolist())
    for x_e, wi, wo in zip(chunks, w_in.unbind(0), w_out.unbind(0), strict=True):
        if x_e.shape[0]:
            outs.append(F.linear(_activate(F.linear(x_e, wi), activation), wo))
    if not outs:  # no rows at all: stay connected to ``xs`` (an expert-parallel backward needs the path)
        return F.linear(_activate(F.linear(xs, w_in[0]), activation), w_out[0])
    return torch.cat(outs)


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
    rows, counts = sort_by_expert(indices, keep, w_in.shape[0])
    tokens = rows // k
    row_weights = weights.reshape(-1).index_select(0, rows).to(x.dtype)
    if pick_backend(backend, x.dtype, (w_out.shape[1], w_out.shape[2])) == "fused":
        return fused_moe(x, tokens, counts, row_weights, w_in, w_out, activation, s)
    ys = expert_ffn(x.index_select(0, tokens), counts, w_in, w_out, activation, backend, row_weights)
    return combine(ys, tokens, s)


def combine(
    ys: torch.Tensor, tokens: torch.Tensor, num_tokens: int, row_weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Back to token order: ``ys`` ``(N, M)`` expert outputs in sorted order (already weighted, or scaled by
    ``row_weights`` ``(N,)`` here), ``tokens`` ``(N,)`` each row's token → ``(num_tokens, M)``, the sum of
    each token's rows (one ``index_add``; its backward is one gather). Tokens with no rows get 0."""
    if row_weights is not None:
        ys = ys * row_weights[:, None]
    return ys.new_zeros(num_tokens, ys.shape[1]).index_add(0, tokens, ys)
