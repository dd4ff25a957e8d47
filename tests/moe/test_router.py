"""Routing oracles: capacity slots, GShard keep probabilities, DeepSeek-V3 bias, normalisation."""

import pytest
import torch

from lmfuse.moe import MoEConfig, preset
from lmfuse.moe.capacity import apply_capacity, slot_positions
from lmfuse.moe.router import RouterDraws, route


def test_eight_tokens_to_one_expert_overflow():
    e, c = 4, 4
    indices = torch.zeros(8, 1, dtype=torch.long)
    keep = apply_capacity(indices, torch.ones(8, 1, dtype=torch.bool), e, c)
    assert keep[:, 0].tolist() == [True] * 4 + [False] * 4
    assert slot_positions(indices, torch.ones(8, 1, dtype=torch.bool), e)[:4, 0].tolist() == [0, 1, 2, 3]


def test_overflow_tokens_produce_exact_zero():
    from lmfuse.moe import MoE

    cfg = MoEConfig(hidden_size=8, moe_intermediate_size=8, num_experts=4, num_experts_per_tok=1,
                    norm_topk="none", capacity_factor=1.0, eval_capacity_factor=1.0, min_capacity=4)  # fmt: skip
    moe = MoE(cfg).eval()
    with torch.no_grad():
        moe.gate.weight.zero_()
        moe.gate.weight[0] = 1.0
    x = torch.rand(8, 8) + 0.1  # all positive: every token prefers expert 0
    y, stats = moe(x)
    assert stats.capacity == 4
    assert stats.load.tolist() == [4, 0, 0, 0]
    assert torch.all(y[4:] == 0) and torch.all(y[:4].abs().sum(-1) > 0)
    assert stats.fraction_dropped == pytest.approx(0.5)


def test_first_choices_win_slots_before_second_choices():
    # Token 0's second choice is expert 1; tokens 1 and 2 choose expert 1 first. C = 2.
    indices = torch.tensor([[0, 1], [1, 2], [1, 3]])
    keep = apply_capacity(indices, torch.ones(3, 2, dtype=torch.bool), 4, 2)
    assert keep.tolist() == [[True, False], [True, True], [True, True]]


@pytest.mark.parametrize("g2,p", [(0.1, 0.2), (0.25, 0.5), (0.4, 0.8), (0.5, 1.0)])
def test_gshard_keep_probability_of_second_expert(g2, p):
    cfg = preset("gshard", num_experts=4, capacity_factor=None)
    s = 20000
    probs = torch.tensor([1 - g2, g2, 0.0, 0.0]).clamp_min(1e-12)
    logits = probs.log().expand(s, 4)
    draws = RouterDraws(uniform=torch.rand(s, 2, generator=torch.Generator().manual_seed(0)))
    r = route(cfg, logits, training=True, draws=draws)
    kept = r.keep[:, 1].float().mean().item()
    assert kept == pytest.approx(p, abs=0.015)
    # Weights are normalised before the drop: a dropped second choice leaves g1 = 1 - g2.
    dropped = ~r.keep[:, 1]
    if dropped.any():
        assert r.weights[dropped, 0].mean().item() == pytest.approx(1 - g2 if g2 < 0.5 else 0.5, abs=1e-5)
        assert torch.all(r.weights[dropped, 1] == 0)


def test_deepseek_v3_bias_selects_but_does_not_weight():
    cfg = MoEConfig(num_experts=4, num_experts_per_tok=2, scoring="sigmoid", routed_scaling_factor=2.5)
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    scores = torch.sigmoid(logits)
    plain = route(cfg, logits)
    assert sorted(plain.indices[0].tolist()) == [0, 1]
    bias = torch.tensor([0.0, -1.0, 0.0, 1.0])  # scores + bias: [.88, -.27, .5, 1.27]
    biased = route(cfg, logits, bias=bias)
    assert biased.indices[0].tolist() == [3, 0]
    expected = scores[0, [3, 0]] / scores[0, [3, 0]].sum() * 2.5
    torch.testing.assert_close(biased.weights[0], expected)


def test_group_limited_routing_masks_with_minus_infinity():
    # Negative biased scores: a 0-masked group would wrongly win over them; -inf never does.
    cfg = MoEConfig(num_experts=4, num_experts_per_tok=2, scoring="sigmoid", n_group=2, topk_group=1)
    logits = torch.zeros(1, 4)  # sigmoid 0.5 everywhere
    bias = torch.tensor([-1.5, -1.7, -2.5, -2.5])  # biased scores [-1, -1.2 | -2, -2]: group 0 wins
    r = route(cfg, logits, bias=bias)
    assert sorted(r.indices[0].tolist()) == [0, 1]


def test_mixtral_weights_equal_softmax_of_top2_logits():
    cfg = preset("mixtral")
    logits = torch.randn(10, 8)
    r = route(cfg, logits)
    top = logits.topk(2, -1)
    torch.testing.assert_close(r.weights, top.values.softmax(-1))
    assert r.indices.tolist() == top.indices.tolist()


def test_normalise_after_drop_reweights_survivors():
    cfg = MoEConfig(num_experts=4, num_experts_per_tok=2, norm_topk="after_drop",
                    capacity_factor=0.5, eval_capacity_factor=0.5, min_capacity=1)  # fmt: skip
    logits = torch.tensor([[3.0, 2.0, 0.0, 0.0], [3.0, 0.0, 2.0, 0.0]])
    r = route(cfg, logits)
    assert r.capacity == 1
    assert r.keep.tolist() == [[True, True], [False, True]]
    assert r.weights[1].tolist() == pytest.approx([0.0, 1.0])
    assert r.weights[0].sum().item() == pytest.approx(1.0)


def test_config_errors_are_collected():
    from lmfuse.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        MoEConfig(num_experts=4, num_experts_per_tok=6, capacity_factor=-1.0, n_group=3).check()
    assert len(info.value.problems) == 3
    with pytest.raises(ConfigError, match="expected one of"):
        preset("nope")
