"""MoE at the edges: zero tokens, padding masks, losses in the input's precision, sigmoid routers' aux loss."""

import pytest
import torch

from lmfuse.moe import MoE, losses, preset
from lmfuse.moe.router import make_draws


def build(cfg, seed: int = 0, dtype=torch.float32) -> MoE:
    torch.manual_seed(seed)
    moe = MoE(cfg, dtype=dtype)
    moe.reset_parameters(std=0.3)
    return moe


# --- zero tokens --------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["grouped", "loop", "fused"])
@pytest.mark.parametrize(
    "name,overrides",
    [
        ("mixtral", dict(num_experts=4)),
        ("gshard", dict(num_experts=4)),
        ("deepseek_v3", dict(num_experts=8, n_group=2, topk_group=1, num_experts_per_tok=2)),
    ],
)
def test_zero_tokens_forward_backward_and_losses(name, overrides, backend):
    cfg = preset(name, hidden_size=16, moe_intermediate_size=16, backend=backend, **overrides)
    moe = build(cfg).train()
    x = torch.zeros(2, 0, 16, requires_grad=True)
    y, stats = moe(x, draws=make_draws(cfg, 0))
    assert y.shape == (2, 0, 16)
    for loss in (stats.aux_loss, stats.topk_aux_loss, stats.z_loss):
        assert torch.isfinite(loss) and loss.item() == 0.0
    assert stats.fraction_dropped == 0.0 and int(stats.load.sum()) == 0
    total = y.sum() + stats.aux_loss + stats.topk_aux_loss + stats.z_loss
    total.backward()
    for p in moe.parameters():
        assert p.grad is None or (torch.isfinite(p.grad).all() and p.grad.abs().sum() == 0)


def test_zero_token_losses_are_zero_with_no_gradient():
    probs = torch.zeros(0, 4, requires_grad=True)
    idx = torch.zeros(0, 2, dtype=torch.long)
    for loss in (
        losses.balance_loss(probs, idx[:, 0]),
        losses.topk_balance_loss(probs, idx),
        losses.router_z_loss(probs),
        losses.expert_balance_loss(probs, idx),
        losses.device_balance_loss(probs, idx, 2),
    ):
        assert loss.item() == 0.0
        (grad,) = torch.autograd.grad(loss, probs, allow_unused=True, materialize_grads=True)
        assert grad.shape == (0, 4)


# --- padding ------------------------------------------------------------------------------------------


def padded_case(cfg, seed=0):
    moe = build(cfg, seed).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(3, 10, cfg.hidden_size, generator=gen)
    mask = torch.ones(3, 10, dtype=torch.bool)
    mask[0, 6:] = False  # right padding
    mask[2, :4] = False  # left padding
    return moe, x, mask


@pytest.mark.parametrize(
    "name,overrides",
    [
        ("mixtral", dict(num_experts=4, eval_capacity_factor=0.6, min_capacity=1)),
        ("gshard", dict(num_experts=4, min_capacity=1)),
        ("deepseek_v3", dict(num_experts=8, n_group=2, topk_group=1, num_experts_per_tok=2)),
    ],
)
def test_padding_is_not_routed_takes_no_capacity_and_is_not_in_losses(name, overrides):
    cfg = preset(name, hidden_size=16, moe_intermediate_size=8, **overrides)
    moe, x, mask = padded_case(cfg)
    y, stats = moe(x, mask=mask)
    real_y, real_stats = moe(x[mask])  # the real tokens alone, as if the padding were not there
    torch.testing.assert_close(y[mask], real_y, rtol=1e-6, atol=1e-6)
    assert real_stats.capacity == stats.capacity
    if stats.capacity is not None:
        assert stats.capacity < moe.cfg.capacity(x.shape[0] * x.shape[1], training=False)
    pad_out = y[~mask]
    shared = moe.shared(x[~mask]) if moe.shared is not None else torch.zeros_like(pad_out)
    torch.testing.assert_close(pad_out, shared)  # no routed output for padding
    assert int(stats.load.sum()) == int((real_stats.routing.keep).sum())
    for a, b in ((stats.aux_loss, real_stats.aux_loss), (stats.topk_aux_loss, real_stats.topk_aux_loss),
                 (stats.z_loss, real_stats.z_loss)):  # fmt: skip
        torch.testing.assert_close(a, b)
    assert stats.fraction_dropped == pytest.approx(real_stats.fraction_dropped)


def test_padding_gets_no_gradient_through_the_router_or_experts():
    cfg = preset("mixtral", hidden_size=16, moe_intermediate_size=8, num_experts=4)
    moe, x, mask = padded_case(cfg)
    x = x.clone().requires_grad_()
    y, stats = moe.train()(x, mask=mask)
    (y.sum() + stats.topk_aux_loss + stats.z_loss).backward()
    assert x.grad[~mask].abs().sum() == 0 and x.grad[mask].abs().sum() > 0


def test_masked_topk_loss_equals_transformers_with_attention_mask():
    from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func

    torch.manual_seed(0)
    e, k = 8, 2
    mask = torch.ones(4, 9, dtype=torch.long)
    mask[1, 5:] = 0
    mask[3, :2] = 0
    logits = torch.randn(36, e)
    probs = logits.softmax(-1)
    idx = probs.topk(k, -1).indices
    ours = losses.topk_balance_loss(probs, idx, hf_scaling=True, mask=mask.reshape(-1).bool())
    theirs = load_balancing_loss_func((logits,), e, k, attention_mask=mask)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-6)
    keep = mask.reshape(-1).bool()
    alone = losses.topk_balance_loss(probs[keep], idx[keep], hf_scaling=True)
    assert ours.item() == pytest.approx(alone.item(), rel=1e-6)


def test_mask_shape_is_checked():
    cfg = preset("mixtral", hidden_size=16, moe_intermediate_size=8, num_experts=4)
    moe = build(cfg)
    with pytest.raises(ValueError, match=r"mask.*\(3, 10\).*\(3, 9\)"):
        moe(torch.randn(3, 10, 16), mask=torch.ones(3, 9, dtype=torch.bool))


# --- precision ----------------------------------------------------------------------------------------


def test_losses_keep_fp64_and_pass_gradcheck():
    torch.manual_seed(0)
    logits = torch.randn(12, 4, dtype=torch.float64, requires_grad=True)
    idx = logits.detach().topk(2, -1).indices
    seq_idx = idx.view(3, 4, 2)
    mask = torch.arange(12) % 5 != 0
    fns = {
        "balance": lambda lg: losses.balance_loss(lg.softmax(-1), idx[:, 0]),
        "topk": lambda lg: losses.topk_balance_loss(lg.softmax(-1), idx, mask=mask),
        "z": lambda lg: losses.router_z_loss(lg, mask=mask),
        "expert": lambda lg: losses.expert_balance_loss(lg.softmax(-1), idx),
        "device": lambda lg: losses.device_balance_loss(lg.softmax(-1), idx, 2),
        "sequence": lambda lg: losses.sequence_balance_loss(lg.sigmoid().view(3, 4, 4), seq_idx),
    }
    for name, fn in fns.items():
        assert fn(logits).dtype == torch.float64, name
        assert torch.autograd.gradcheck(fn, (logits,)), name
    # bf16 inputs still get fp32 losses
    assert losses.router_z_loss(logits.detach().bfloat16()).dtype == torch.float32


def test_fp64_layer_stats_are_fp64():
    cfg = preset("mixtral", hidden_size=8, moe_intermediate_size=4, num_experts=4)
    moe = build(cfg, dtype=torch.float64)
    _, stats = moe(torch.randn(5, 8, dtype=torch.float64))
    assert {stats.aux_loss.dtype, stats.topk_aux_loss.dtype, stats.z_loss.dtype} == {torch.float64}


# --- sigmoid routers ----------------------------------------------------------------------------------


def test_sigmoid_router_aux_losses_are_one_at_balance():
    """DeepSeek-V3 scores near 0.5 for every expert and each expert chosen equally often: 1.0, not E/2."""
    e, k = 8, 2
    cfg = preset("deepseek_v3", hidden_size=e, moe_intermediate_size=4, num_experts=e,
                 num_experts_per_tok=k, n_group=1, topk_group=1)  # fmt: skip
    moe = build(cfg)
    with torch.no_grad():
        moe.gate.weight.copy_(torch.eye(e) * 1e-4)
    s = torch.arange(4 * e)
    x = torch.nn.functional.one_hot(s % e, e).float() + 0.5 * torch.nn.functional.one_hot((s + 1) % e, e)
    _, stats = moe(x)
    assert torch.bincount(stats.routing.indices.reshape(-1), minlength=e).unique().numel() == 1
    assert stats.aux_loss.item() == pytest.approx(1.0, abs=1e-3)
    assert stats.topk_aux_loss.item() == pytest.approx(1.0, abs=1e-3)
