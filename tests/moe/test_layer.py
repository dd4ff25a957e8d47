"""The MoE layer against the einsum oracle, backends against each other, and gradcheck."""

import pytest
import torch

from lmfuse.moe import MoE, MoEConfig, preset
from lmfuse.moe.oracle import einsum_moe
from lmfuse.moe.router import make_draws


def build(cfg: MoEConfig, seed: int = 0, dtype=torch.float32) -> MoE:
    torch.manual_seed(seed)
    moe = MoE(cfg, dtype=dtype)
    moe.reset_parameters(std=0.3)
    return moe


def oracle(moe: MoE, x, draws=None, capacity=None):
    cfg = moe.cfg
    policy = cfg.second_expert_policy if moe.training else "all"
    return einsum_moe(
        x, moe.gate.weight, moe.experts_in, moe.experts_out, cfg.num_experts_per_tok,
        capacity or x.shape[0], cfg.activation, policy, cfg.norm_topk, draws,
    )  # fmt: skip


CASES = [
    ("gshard", dict(num_experts=4)),
    ("gshard", dict(num_experts=6, capacity_factor=0.5, min_capacity=1)),
    ("gshard", dict(num_experts=4, second_expert_policy="sampling")),
    ("gshard", dict(num_experts=4, second_expert_policy="all", norm_topk="after_drop", capacity_factor=0.6)),
    ("switch", dict(num_experts=4, min_capacity=1, router_jitter=0.0)),
    ("mixtral", dict(num_experts=4, capacity_factor=0.8, min_capacity=1)),
    ("mixtral", dict(num_experts=5, num_experts_per_tok=3, capacity_factor=0.7, min_capacity=1)),
]


@pytest.mark.parametrize("backend", ["grouped", "loop", "fused"])
@pytest.mark.parametrize("name,overrides", CASES)
def test_backends_equal_einsum_oracle_with_same_capacity_and_draws(name, overrides, backend):
    cfg = preset(name, hidden_size=16, moe_intermediate_size=12, backend=backend, **overrides)
    moe = build(cfg).train()
    x = torch.randn(40, 16)
    draws = make_draws(cfg, 40, torch.Generator().manual_seed(3))
    y, stats = moe(x, draws=draws)
    ref = oracle(moe, x, draws, stats.capacity)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
    if stats.capacity is not None and overrides.get("capacity_factor", 1) < 1:
        assert stats.fraction_dropped > 0  # the case really exercises drops
    # gradients agree with the oracle's too
    g = torch.randn_like(y)
    grads = torch.autograd.grad((y * g).sum(), [moe.experts_in, moe.experts_out])
    ref_grads = torch.autograd.grad((ref * g).sum(), [moe.experts_in, moe.experts_out])
    for a, b in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_dropless_backends_equal_each_other_outputs_and_gradients():
    cfg = preset(
        "deepseek_moe", hidden_size=16, moe_intermediate_size=8, num_experts=8, num_experts_per_tok=3
    )
    results = {}
    x0 = torch.randn(2, 17, 16)
    for backend in ("grouped", "loop", "fused"):
        cfg.backend = backend
        moe = build(cfg).train()
        x = x0.clone().requires_grad_()
        y, stats = moe(x)
        loss = (y * torch.linspace(-1, 1, 16)).sum() + 0.1 * stats.topk_aux_loss + 0.01 * stats.z_loss
        loss.backward()
        grads = [x.grad] + [p.grad for p in moe.parameters()]
        results[backend] = (y.detach(), grads)
    for other in ("loop", "fused"):
        torch.testing.assert_close(results["grouped"][0], results[other][0], rtol=1e-5, atol=1e-6)
        for a, b in zip(results["grouped"][1], results[other][1], strict=True):
            assert a is not None and a.abs().sum() > 0
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_dropless_equals_dense_reference():
    """Dropless top-k equals running every expert on every token and mixing with top-k weights."""
    cfg = preset("mixtral", hidden_size=8, moe_intermediate_size=6, num_experts=4)
    moe = build(cfg).eval()
    x = torch.randn(9, 8)
    y, stats = moe(x)
    r = stats.routing
    dense = torch.zeros_like(x)
    for e in range(4):
        gate, up = (x @ moe.experts_in[e].T).chunk(2, -1)
        out = (torch.nn.functional.silu(gate) * up) @ moe.experts_out[e].T
        w = (r.weights * (r.indices == e)).sum(-1, keepdim=True)
        dense = dense + w * out
    torch.testing.assert_close(y, dense, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", ["loop", "fused"])
@pytest.mark.parametrize("name", ["gshard", "mixtral", "deepseek_v3"])
def test_fp64_gradcheck(name, backend):
    overrides = dict(num_experts=8, n_group=2, topk_group=1) if name == "deepseek_v3" else {}
    if name == "gshard":
        overrides = dict(num_experts=4, second_expert_policy="all", min_capacity=1)
    cfg = preset(name, hidden_size=6, moe_intermediate_size=4, backend=backend, **overrides)
    moe = build(cfg, dtype=torch.float64).eval()
    x = torch.randn(7, 6, dtype=torch.float64, requires_grad=True)
    w_in = moe.experts_in.detach().clone().requires_grad_()
    w_out = moe.experts_out.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b, c: _functional(moe, a, b, c), (x, w_in, w_out))
    # the module's own forward matches the functional form
    torch.testing.assert_close(moe(x)[0], _functional(moe, x, moe.experts_in, moe.experts_out))


def _functional(moe, x, w_in, w_out):
    from lmfuse.moe.dispatch import dispatch_combine
    from lmfuse.moe.router import route

    logits = torch.nn.functional.linear(x, moe.gate.weight)
    r = route(moe.cfg, logits, bias=moe.expert_bias if moe.cfg.scoring == "sigmoid" else None)
    y = dispatch_combine(
        x, r.indices, r.weights.to(x.dtype), r.keep, w_in, w_out, moe.cfg.activation, moe.cfg.backend
    )
    return y + (moe.shared(x) if moe.shared is not None else 0)


def test_router_gradient_flows_and_is_fp32_in_bf16_model():
    cfg = preset("mixtral", hidden_size=16, moe_intermediate_size=8, num_experts=4)
    moe = build(cfg, dtype=torch.bfloat16).train()
    x = torch.randn(12, 16, dtype=torch.bfloat16)
    y, stats = moe(x)
    assert y.dtype == torch.bfloat16 and stats.routing.logits.dtype == torch.float32
    (y.float().sum() + stats.topk_aux_loss).backward()
    assert moe.gate.weight.grad is not None and moe.gate.weight.grad.abs().sum() > 0


def test_bf16_grouped_close_to_fp32():
    cfg = preset("mixtral", hidden_size=32, moe_intermediate_size=16, num_experts=4)
    moe = build(cfg).eval()
    x = torch.randn(30, 32)
    y32, _ = moe(x)
    y16, _ = moe.to(torch.bfloat16)(x.bfloat16())
    torch.testing.assert_close(y16.float(), y32, rtol=0.05, atol=0.05)


def test_deepseek_v3_bias_update_balances_load():
    cfg = preset("deepseek_v3", hidden_size=16, moe_intermediate_size=4, num_experts=8, num_experts_per_tok=2,
                 n_group=1, topk_group=1, bias_update_rate=0.01)  # fmt: skip
    moe = build(cfg).eval()
    with torch.no_grad():
        moe.gate.weight[0] += 1.0  # expert 0 favoured
    x = torch.randn(256, 16).abs()
    _, first = moe(x)
    for _ in range(100):
        _, stats = moe(x)
        moe.update_bias(stats.load)
    assert stats.load.max() < first.load.max()
    assert moe.expert_bias[0] < 0


def test_switch_jitter_only_in_training():
    cfg = preset("switch", hidden_size=8, moe_intermediate_size=8, num_experts=4)
    moe = build(cfg)
    x = torch.randn(20, 8)
    moe.eval()
    torch.testing.assert_close(moe(x)[0], moe(x)[0])
    assert cfg.capacity(20, training=True) == 7 and cfg.capacity(20, training=False) == 10
