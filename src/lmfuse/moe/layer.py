"""``MoE``: the mixture-of-experts feed-forward layer, read top to bottom in ``forward``.

Weights use the transformers v5 layout: ``gate.weight`` ``(E, M)``, stacked experts
``experts_in`` ``(E, 2I, M)`` (swiglu: gate rows then up rows, as v5's ``gate_up_proj``) or ``(E, I, M)``
(relu), ``experts_out`` ``(E, M, I)`` (v5's ``down_proj``); shared experts are one dense MLP.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from lmfuse.moe import losses
from lmfuse.moe.config import MoEConfig
from lmfuse.moe.dispatch import dispatch_combine
from lmfuse.moe.router import RouterDraws, Routing, make_draws, route, router_precision


@dataclass
class MoEStats:
    """Routing statistics of one forward pass (losses are differentiable scalars)."""

    aux_loss: torch.Tensor
    """GShard/Switch aux loss (first choices), 1.0 at balance (sigmoid routers: on scores normalised per
    token)."""
    topk_aux_loss: torch.Tensor
    """Top-k aux loss over all choices, 1.0 at balance."""
    z_loss: torch.Tensor
    """Router z-loss."""
    load: torch.Tensor
    """``(E,)`` kept (token, choice) pairs per expert."""
    fraction_dropped: float
    """Share of routed choices dropped by capacity or the second-expert policy."""
    capacity: int | None
    routing: Routing


def real_token_ids(mask: torch.Tensor, token_shape: torch.Size, device: torch.device) -> torch.Tensor:
    """Flat ids ``(S_real,)`` of the real tokens in ``mask`` (shape ``token_shape``, bool or 0/1)."""
    if tuple(mask.shape) != tuple(token_shape):
        raise ValueError(
            f"mask: expected shape {tuple(token_shape)} (the input without its hidden dimension), "
            f"found {tuple(mask.shape)}"
        )
    return torch.nonzero(mask.reshape(-1).to(device) != 0).squeeze(1)


class SharedExperts(nn.Module):
    """DeepSeekMoE's always-on experts, fused into one dense MLP of width ``cfg.shared_width`` (``up``: gate
    rows then up rows for swiglu); with ``cfg.shared_expert_gate``, Qwen2-MoE's per-token
    ``sigmoid(x·gate)`` scales its output."""

    def __init__(self, cfg: MoEConfig) -> None:
        super().__init__()
        width = cfg.shared_width
        glu = cfg.activation == "swiglu"
        self.activation = cfg.activation
        self.up = nn.Linear(cfg.hidden_size, (2 if glu else 1) * width, bias=False)
        self.down = nn.Linear(width, cfg.hidden_size, bias=False)
        self.gate = nn.Linear(cfg.hidden_size, 1, bias=False) if cfg.shared_expert_gate else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.up(x)
        if self.activation == "swiglu":
            gate, up = h.chunk(2, dim=-1)
            out = self.down(F.silu(gate) * up)
        else:
            out = self.down(F.relu(h))
        return out if self.gate is None else torch.sigmoid(self.gate(x)) * out


class MoE(nn.Module):
    """A routed mixture of experts (plus optional shared experts); ``forward`` returns ``(y, MoEStats)``."""

    def __init__(self, cfg: MoEConfig, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.cfg = cfg.check()
        e, m, i = cfg.num_experts, cfg.hidden_size, cfg.moe_intermediate_size
        rows = 2 * i if cfg.activation == "swiglu" else i
        self.gate = nn.Linear(m, e, bias=False, dtype=dtype)
        self.experts_in = nn.Parameter(torch.empty(e, rows, m, dtype=dtype))
        self.experts_out = nn.Parameter(torch.empty(e, m, i, dtype=dtype))
        self.shared = SharedExperts(cfg).to(dtype) if cfg.n_shared_experts else None
        # Selection-only bias (DeepSeek-V3); a buffer: it moves by update_bias, never by gradients.
        self.register_buffer("expert_bias", torch.zeros(e, dtype=torch.float32))
        self.reset_parameters()

    def reset_parameters(self, std: float = 0.02) -> None:
        for p in (self.gate.weight, self.experts_in, self.experts_out):
            nn.init.normal_(p, std=std)

    def forward(
        self,
        x: torch.Tensor,
        draws: RouterDraws | None = None,
        generator: torch.Generator | None = None,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, MoEStats]:
        """``x``: ``(..., M)`` → ``y`` ``(..., M)`` and stats. ``draws`` fixes the random routing choices.

        ``mask`` ``(...)`` (``x.shape[:-1]``, bool or 0/1, as an attention mask): only real tokens are
        routed, take capacity (computed over the real tokens) and count in the losses and stats; padding
        gets routed output 0. With a mask, ``draws`` and ``stats.routing`` have one row per real token.
        """
        cfg, shape = self.cfg, x.shape
        x = x.reshape(-1, shape[-1])  # (S, M)
        real = None if mask is None else real_token_ids(mask, shape[:-1], x.device)
        xr = x if real is None else x.index_select(0, real)
        router_in = xr
        if self.training and cfg.router_jitter > 0:
            noise = torch.empty_like(xr).uniform_(1 - cfg.router_jitter, 1 + cfg.router_jitter)
            router_in = xr * noise
        # (S, E); the router runs in fp32 at least, whatever the model dtype.
        logits = F.linear(router_precision(router_in), router_precision(self.gate.weight))
        if self.training and draws is None and cfg.second_expert_policy != "all":
            draws = make_draws(cfg, xr.shape[0], generator)
        bias = self.expert_bias if cfg.scoring == "sigmoid" else None
        routing = route(cfg, logits, self.training, bias, draws)
        y = dispatch_combine(
            xr, routing.indices, routing.weights, routing.keep,
            self.experts_in, self.experts_out, cfg.activation, cfg.backend,
        )  # fmt: skip
        if real is not None:
            y = x.new_zeros(x.shape).index_copy(0, real, y)
        if self.shared is not None:
            y = y + self.shared(x)
        return y.view(shape), self._stats(routing)

    def _stats(self, routing: Routing) -> MoEStats:
        e = self.cfg.num_experts
        load = torch.bincount(routing.indices[routing.keep], minlength=e)
        # Sigmoid scores do not sum to 1 over experts: the losses take them normalised per token.
        probs = losses.normalised_scores(routing.scores) if self.cfg.scoring == "sigmoid" else routing.scores
        kept = routing.keep.numel()
        return MoEStats(
            aux_loss=losses.balance_loss(probs, routing.indices[:, 0]),
            topk_aux_loss=losses.topk_balance_loss(probs, routing.indices),
            z_loss=losses.router_z_loss(routing.logits),
            load=load,
            fraction_dropped=1.0 - float(routing.keep.sum()) / kept if kept else 0.0,
            capacity=routing.capacity,
            routing=routing,
        )

    @torch.no_grad()
    def update_bias(self, load: torch.Tensor, rate: float | None = None) -> None:
        """Aux-loss-free balancing step (DeepSeek-V3) from the last forward's ``stats.load``."""
        rate = self.cfg.bias_update_rate if rate is None else rate
        self.expert_bias.copy_(losses.bias_update(self.expert_bias, load, rate))
