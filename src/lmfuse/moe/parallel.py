"""Expert parallelism over ``torch.distributed``: each rank holds ``E / world`` experts.

Forward per rank: route its own tokens, sort the (token, choice) pairs by expert, exchange per-expert
counts, send each pair's hidden state to the rank that owns its expert with ``all_to_all_single``
(uneven splits, inside an autograd function so gradients flow back the same way), run the local experts
as one grouped matmul, send the results back, combine. Works with NCCL on GPUs and gloo on CPU.
The router and shared experts are replicated: all-reduce their gradients like data-parallel weights.
With a capacity factor, capacity is computed per rank over that rank's tokens (as GShard's groups).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from lmfuse.moe.config import MoEConfig
from lmfuse.moe.dispatch import combine, expert_ffn, sort_by_expert
from lmfuse.moe.layer import MoE
from lmfuse.moe.router import make_draws, route, router_precision


class _AllToAll(torch.autograd.Function):
    """``all_to_all_single`` with uneven splits; the backward sends gradients back with swapped splits."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, out_splits: list[int], in_splits: list[int], group) -> torch.Tensor:
        ctx.splits, ctx.group = (out_splits, in_splits), group
        out = x.new_empty(sum(out_splits), *x.shape[1:])
        dist.all_to_all_single(out, x.contiguous(), out_splits, in_splits, group=group)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        out_splits, in_splits = ctx.splits
        back = grad.new_empty(sum(in_splits), *grad.shape[1:])
        dist.all_to_all_single(back, grad.contiguous(), in_splits, out_splits, group=ctx.group)
        return back, None, None, None


def all_to_all(x: torch.Tensor, out_splits: list[int], in_splits: list[int], group=None) -> torch.Tensor:
    """Differentiable ``all_to_all_single``: rows ``in_splits[r]`` go to rank ``r``; ``(sum(out_splits), ...)``."""
    return _AllToAll.apply(x, out_splits, in_splits, group)


class ExpertParallelMoE(nn.Module):
    """The ``MoE`` layer with its routed experts sharded across the ranks of ``group``."""

    def __init__(self, cfg: MoEConfig, group=None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.cfg, self.group = cfg.check(), group
        self.world = dist.get_world_size(group)
        self.rank = dist.get_rank(group)
        if cfg.num_experts % self.world:
            raise ValueError(
                f"num_experts ({cfg.num_experts}) must be divisible by the world size ({self.world})"
            )
        self.local = cfg.num_experts // self.world
        full = MoE(cfg, dtype=dtype)
        lo = self.rank * self.local
        self.gate, self.shared = full.gate, full.shared
        self.experts_in = nn.Parameter(full.experts_in.detach()[lo : lo + self.local].clone())
        self.experts_out = nn.Parameter(full.experts_out.detach()[lo : lo + self.local].clone())
        self.register_buffer("expert_bias", full.expert_bias.clone())

    @classmethod
    def from_moe(cls, moe: MoE, group=None) -> ExpertParallelMoE:
        """This rank's shard of a full ``MoE`` (same router, shared experts and bias)."""
        ep = cls(moe.cfg, group, dtype=moe.experts_in.dtype)
        lo = ep.rank * ep.local
        with torch.no_grad():
            ep.gate.weight.copy_(moe.gate.weight)
            ep.experts_in.copy_(moe.experts_in[lo : lo + ep.local])
            ep.experts_out.copy_(moe.experts_out[lo : lo + ep.local])
            ep.expert_bias.copy_(moe.expert_bias)
            if moe.shared is not None:
                ep.shared.load_state_dict(moe.shared.state_dict())
        return ep

    def forward(self, x: torch.Tensor, draws=None, generator=None) -> torch.Tensor:
        """``x``: ``(..., M)`` this rank's tokens → ``(..., M)``."""
        cfg, shape = self.cfg, x.shape
        x = x.reshape(-1, shape[-1])  # (S, M)
        s, k = x.shape[0], cfg.num_experts_per_tok
        logits = nn.functional.linear(router_precision(x), router_precision(self.gate.weight))
        if self.training and draws is None and cfg.second_expert_policy != "all":
            draws = make_draws(cfg, s, generator)
        bias = self.expert_bias if cfg.scoring == "sigmoid" else None
        r = route(cfg, logits, self.training, bias, draws)
        rows, counts = sort_by_expert(r.indices, r.keep, cfg.num_experts)
        recv_counts = torch.empty_like(counts)
        dist.all_to_all_single(recv_counts, counts, group=self.group)  # (world·local,) by source rank
        in_splits = counts.view(self.world, self.local).sum(1).tolist()
        out_splits = recv_counts.view(self.world, self.local).sum(1).tolist()
        tokens = rows // k
        received = all_to_all(x.index_select(0, tokens), out_splits, in_splits, self.group)
        ys = self._local_experts(received, recv_counts)
        back = all_to_all(ys, in_splits, out_splits, self.group)  # (N, M), in the order of ``rows``
        y = combine(back, tokens, s, r.weights.reshape(-1).index_select(0, rows).to(x.dtype))
        if self.shared is not None:
            y = y + self.shared(x)
        return y.view(shape)

    def _local_experts(self, received: torch.Tensor, recv_counts: torch.Tensor) -> torch.Tensor:
        """Rows grouped by (source rank, local expert) → regroup by expert, run, restore the order."""
        local_ids = torch.arange(self.local, device=received.device).repeat(self.world)
        expert_of_row = torch.repeat_interleave(local_ids, recv_counts)
        order = torch.argsort(expert_of_row, stable=True)
        counts = torch.bincount(expert_of_row, minlength=self.local)
        out = expert_ffn(
            received[order], counts, self.experts_in, self.experts_out, self.cfg.activation, self.cfg.backend
        )
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(order.numel(), device=order.device)
        return out[inverse]
