"""Load a transformers MoE block's weights into ``lmfuse.moe.MoE`` and write them back.

Supported blocks (transformers 5.x, experts stacked as ``experts.gate_up_proj`` ``(E, 2I, M)`` and
``experts.down_proj`` ``(E, M, I)``, the same layout as ``MoE``): ``MixtralSparseMoeBlock``,
``Qwen2MoeSparseMoeBlock`` (sigmoid-gated shared expert), ``Qwen3MoeSparseMoeBlock`` and ``DeepseekV3MoE``
(sigmoid router with ``e_score_correction_bias``, group-limited top-k, scaling, shared experts). The kind is
read from the block's structure; ``from_hf(block)`` and the block give the same outputs in eval mode.
"""

from __future__ import annotations

import torch
from torch import nn

from lmfuse.moe.config import MoEConfig
from lmfuse.moe.layer import MoE


def block_kind(block: nn.Module) -> str:
    """``mixtral``, ``qwen2_moe``, ``qwen3_moe`` or ``deepseek_v3``; ``ValueError`` for anything else."""
    gate, experts = getattr(block, "gate", None), getattr(block, "experts", None)
    if gate is None or not hasattr(experts, "gate_up_proj") or not hasattr(experts, "down_proj"):
        raise ValueError(
            f"{type(block).__name__} is not a transformers 5 sparse-MoE block (expected a `gate` router and "
            "`experts` with stacked `gate_up_proj` / `down_proj`)"
        )
    if hasattr(gate, "e_score_correction_bias") and hasattr(block, "shared_experts"):
        return "deepseek_v3"
    if hasattr(block, "shared_expert_gate") and hasattr(block, "shared_expert"):
        return "qwen2_moe"
    return "qwen3_moe" if hasattr(gate, "norm_topk_prob") else "mixtral"


def _check_silu(block: nn.Module) -> None:
    act = block.experts.act_fn
    if type(act).__name__ not in ("SiLUActivation", "SiLU"):
        raise ValueError(f"{type(block).__name__}: only SiLU (SwiGLU) experts map to MoE, found {act}")


def config_from_hf(block: nn.Module) -> MoEConfig:
    """The ``MoEConfig`` that routes and computes as ``block`` does."""
    kind = block_kind(block)
    _check_silu(block)
    gate, experts = block.gate, block.experts
    fields = dict(
        hidden_size=experts.hidden_dim, moe_intermediate_size=experts.intermediate_dim,
        num_experts=experts.num_experts, num_experts_per_tok=gate.top_k, activation="swiglu",
    )  # fmt: skip
    if kind == "mixtral":
        return MoEConfig(**fields, norm_topk="before_drop", router_jitter=block.jitter_noise).check()
    norm = "before_drop" if gate.norm_topk_prob else "none"
    if kind == "qwen3_moe":
        return MoEConfig(**fields, norm_topk=norm).check()
    if kind == "qwen2_moe":
        width = block.shared_expert.intermediate_size
        return MoEConfig(
            **fields, norm_topk=norm, n_shared_experts=1, shared_expert_intermediate_size=width,
            shared_expert_gate=True,
        ).check()  # fmt: skip
    return MoEConfig(
        **fields, norm_topk=norm, scoring="sigmoid", routed_scaling_factor=gate.routed_scaling_factor,
        n_group=gate.num_group, topk_group=gate.topk_group, n_shared_experts=1,
        shared_expert_intermediate_size=block.shared_experts.intermediate_size,
    ).check()  # fmt: skip


def _shared_module(block: nn.Module, kind: str) -> nn.Module | None:
    name = {"qwen2_moe": "shared_expert", "deepseek_v3": "shared_experts"}.get(kind)
    return getattr(block, name) if name else None


@torch.no_grad()
def from_hf(block: nn.Module, backend: str = "auto") -> MoE:
    """A new ``MoE`` holding a copy of ``block``'s weights (same dtype)."""
    kind = block_kind(block)
    cfg = config_from_hf(block)
    cfg.backend = backend
    moe = MoE(cfg, dtype=block.experts.gate_up_proj.dtype)
    moe.gate.weight.copy_(block.gate.weight)
    moe.experts_in.copy_(block.experts.gate_up_proj)
    moe.experts_out.copy_(block.experts.down_proj)
    if kind == "deepseek_v3":
        moe.expert_bias.copy_(block.gate.e_score_correction_bias)
    shared = _shared_module(block, kind)
    if shared is not None:
        moe.shared.up.weight.copy_(torch.cat([shared.gate_proj.weight, shared.up_proj.weight]))
        moe.shared.down.weight.copy_(shared.down_proj.weight)
    if kind == "qwen2_moe":
        moe.shared.gate.weight.copy_(block.shared_expert_gate.weight)
    return moe.train(block.training)


@torch.no_grad()
def to_hf(moe: MoE, block: nn.Module) -> nn.Module:
    """Write ``moe``'s weights into ``block`` (in place; shapes and routing must match) and return it."""
    kind = block_kind(block)
    want = config_from_hf(block)
    have = moe.cfg
    for name in ("hidden_size", "moe_intermediate_size", "num_experts", "num_experts_per_tok", "scoring",
                 "norm_topk", "routed_scaling_factor", "n_group", "topk_group", "shared_width",
                 "shared_expert_gate"):  # fmt: skip
        if getattr(want, name) != getattr(have, name):
            raise ValueError(
                f"{type(block).__name__} needs {name} = {getattr(want, name)!r}, the MoE has {getattr(have, name)!r}"
            )
    block.gate.weight.copy_(moe.gate.weight)
    block.experts.gate_up_proj.copy_(moe.experts_in)
    block.experts.down_proj.copy_(moe.experts_out)
    if kind == "deepseek_v3":
        block.gate.e_score_correction_bias.copy_(moe.expert_bias)
    shared = _shared_module(block, kind)
    if shared is not None:
        gate_w, up_w = moe.shared.up.weight.chunk(2, dim=0)
        shared.gate_proj.weight.copy_(gate_w)
        shared.up_proj.weight.copy_(up_w)
        shared.down_proj.weight.copy_(moe.shared.down.weight)
    if kind == "qwen2_moe":
        block.shared_expert_gate.weight.copy_(moe.shared.gate.weight)
    return block
