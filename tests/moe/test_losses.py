"""The METHODS.md loss oracles: 1.0 at balance, E at collapse, (ln E)² z-loss, bias update direction."""

import math

import pytest
import torch

from lmfuse.moe import losses


def balanced(e: int, per: int = 3, k: int = 1):
    """Uniform probabilities and every expert chosen equally often."""
    s = e * per
    probs = torch.full((s, e), 1.0 / e)
    indices = torch.stack([(torch.arange(s) + j) % e for j in range(k)], -1)
    return probs, indices


@pytest.mark.parametrize("e", [4, 8, 64])
def test_aux_loss_is_one_at_balance_and_e_at_collapse(e):
    probs, idx = balanced(e)
    assert losses.balance_loss(probs, idx[:, 0]).item() == pytest.approx(1.0)
    collapsed = torch.zeros(16, e)
    collapsed[:, 0] = 1.0
    assert losses.balance_loss(collapsed, torch.zeros(16, dtype=torch.long)).item() == pytest.approx(e)


def test_topk_aux_loss_scaling_matches_transformers():
    from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func

    torch.manual_seed(0)
    e, k = 8, 2
    logits = torch.randn(40, e)
    probs = logits.softmax(-1)
    idx = probs.topk(k, -1).indices
    ours = losses.topk_balance_loss(probs, idx, hf_scaling=True)
    theirs = load_balancing_loss_func((logits,), e, k)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5)
    p, i = balanced(e, k=k)
    assert losses.topk_balance_loss(p, i).item() == pytest.approx(1.0)
    assert losses.topk_balance_loss(p, i, hf_scaling=True).item() == pytest.approx(k)


@pytest.mark.parametrize("e", [2, 8, 64])
def test_z_loss_of_zero_logits(e):
    assert losses.router_z_loss(torch.zeros(5, e)).item() == pytest.approx(math.log(e) ** 2)


def test_z_loss_value_for_eight_experts():
    assert losses.router_z_loss(torch.zeros(3, 8)).item() == pytest.approx(4.3241, abs=1e-4)


def test_deepseek_losses_are_one_at_balance():
    probs, idx = balanced(8, k=2)
    assert losses.expert_balance_loss(probs, idx).item() == pytest.approx(1.0)
    assert losses.device_balance_loss(probs, idx, num_devices=4).item() == pytest.approx(1.0)
    scores = torch.full((2, 16, 8), 0.3)
    seq_idx = torch.stack([idx[:16], idx[:16]])
    assert losses.sequence_balance_loss(scores, seq_idx).item() == pytest.approx(1.0)


def test_imbalance_raises_every_loss():
    e = 8
    probs = torch.softmax(torch.tensor([3.0] + [0.0] * (e - 1)), -1).expand(24, e)
    idx = torch.zeros(24, 2, dtype=torch.long)
    idx[:, 1] = 1
    assert losses.balance_loss(probs, idx[:, 0]) > 1.5
    assert losses.expert_balance_loss(probs, idx) > 1.5
    assert losses.device_balance_loss(probs, idx, 4) > 1.5


def test_bias_update_moves_toward_balance():
    bias = torch.zeros(4)
    new = losses.bias_update(bias, torch.tensor([10, 2, 2, 2]), rate=0.001)
    assert new.tolist() == pytest.approx([-0.001, 0.001, 0.001, 0.001])
