"""The ``fused`` dispatch backend: one expert at a time, gather → FFN → weighted ``index_add``, forward and a
hand-written backward in the same per-expert loop.

Why: on CPU a grouped matmul is itself a loop of matmuls, but running every step for all experts before the
next (gather all, first projection all, activation all, ...) streams each ``(S·k, ·)`` intermediate through
main memory. Per expert, its rows (``n_e × M``) and its weights stay in cache from the gather to the
scatter, in the backward too. The backward also needs no zero-filled per-expert gradients: each expert's
weight gradient is written into its slice of one ``(E, ·, ·)`` buffer (autograd through ``W[e]`` would
allocate a full-size zero gradient per expert). Saved for backward: the pre-activation ``h`` (``N × 2I``),
as autograd would; the expert output is not saved: the gradient of a row's combine weight is
``⟨g, o⟩ = ⟨g·W_out, a⟩``, and ``g·W_out`` is needed anyway.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def fused_moe(x, tokens, counts, row_weights, w_in, w_out, activation: str, num_tokens: int) -> torch.Tensor:
    """``Σ`` over rows of ``row_weights[r] · expert_e(x[tokens[r]])`` into ``(num_tokens, M)``.

    ``tokens`` ``(N,)`` the token of each routed row, sorted by expert with ``counts`` ``(E,)``;
    ``row_weights`` ``(N,)``; ``w_in`` ``(E, 2I or I, M)``, ``w_out`` ``(E, M, I)``.
    """
    tracked = torch.is_grad_enabled() and any(t.requires_grad for t in (x, row_weights, w_in, w_out))
    if tracked:
        return _FusedMoE.apply(x, tokens, counts, row_weights, w_in, w_out, activation, num_tokens)
    return _forward(x, tokens, counts.tolist(), row_weights, w_in, w_out, activation, num_tokens, None)


def _forward(x, tokens, sizes, row_weights, w_in, w_out, activation, num_tokens, h_all):
    """The per-expert forward; ``h_all`` ``(N, 2I)`` receives the pre-activations when given (backward)."""
    y = x.new_zeros(num_tokens, x.shape[1])
    start = 0
    for e, n in enumerate(sizes):
        if n:
            tok = tokens[start : start + n]
            out = None if h_all is None else h_all[start : start + n]
            h = torch.mm(x.index_select(0, tok), w_in[e].t(), out=out)
            o = torch.mm(_act(h, activation), w_out[e].t())
            y.index_add_(0, tok, o.mul_(row_weights[start : start + n, None]))
        start += n
    return y


def _act(h: torch.Tensor, activation: str) -> torch.Tensor:
    """A new tensor (``h`` is kept for the backward): in-place steps only on the fresh result."""
    if activation == "swiglu":
        gate, up = h.chunk(2, dim=-1)
        return F.silu(gate).mul_(up)
    return F.relu(h)


def _act_backward(grad_a: torch.Tensor, h: torch.Tensor, activation: str) -> torch.Tensor:
    """``d act(h) / dh`` applied to ``grad_a``."""
    if activation == "swiglu":
        gate, up = h.chunk(2, dim=-1)
        sig = torch.sigmoid(gate)
        silu = gate * sig
        dsilu = (1 - sig).mul_(silu).add_(sig)  # silu'(g) = σ + silu·(1 − σ)
        grad_h = torch.empty_like(h)
        grad_gate, grad_up = grad_h.chunk(2, dim=-1)
        torch.mul(grad_a, up, out=grad_gate).mul_(dsilu)
        torch.mul(grad_a, silu, out=grad_up)
        return grad_h
    return grad_a * (h > 0)


class _FusedMoE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, tokens, counts, row_weights, w_in, w_out, activation, num_tokens):
        sizes = counts.tolist()
        h_all = x.new_empty(tokens.shape[0], w_in.shape[1])
        y = _forward(x, tokens, sizes, row_weights, w_in, w_out, activation, num_tokens, h_all)
        ctx.save_for_backward(x, tokens, row_weights, w_in, w_out, h_all)
        ctx.sizes, ctx.activation = sizes, activation
        return y

    @staticmethod
    def backward(ctx, grad_y):
        x, tokens, row_weights, w_in, w_out, h_all = ctx.saved_tensors
        need_x, need_w, need_in, need_out = (ctx.needs_input_grad[i] for i in (0, 3, 4, 5))
        grad_y = grad_y.contiguous()
        grad_x = torch.zeros_like(x) if need_x else None
        grad_w = torch.empty_like(row_weights) if need_w else None
        grad_in = torch.empty_like(w_in) if need_in else None
        grad_out = torch.empty_like(w_out) if need_out else None
        start = 0
        for e, n in enumerate(ctx.sizes):
            if not n:
                for buf in (grad_in, grad_out):
                    if buf is not None:
                        buf[e].zero_()
                continue
            sl = slice(start, start + n)
            tok, h, c = tokens[sl], h_all[sl], row_weights[sl, None]
            g = grad_y.index_select(0, tok)  # (n, M)
            a = _act(h, ctx.activation)  # (n, I), recomputed
            if need_out:
                torch.mm((g * c).t(), a, out=grad_out[e])
            t = torch.mm(g, w_out[e])  # (n, I) = g · W_out
            if need_w:
                grad_w[sl] = (t * a).sum(-1)
            grad_h = _act_backward(t.mul_(c), h, ctx.activation)  # (n, 2I)
            if need_in:
                torch.mm(grad_h.t(), x.index_select(0, tok), out=grad_in[e])
            if need_x:
                grad_x.index_add_(0, tok, torch.mm(grad_h, w_in[e]))
            start += n
        return grad_x, None, None, grad_w, grad_in, grad_out, None, None
