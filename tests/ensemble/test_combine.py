"""Combine modes and sampling processors against direct formulas."""

from __future__ import annotations

import math

import pytest
import torch

from lmfuse.ensemble.combine import (
    COMBINE,
    apply_top_k,
    apply_top_p,
    next_tokens,
    normalise_weights,
)
from lmfuse.errors import ConfigError


@pytest.fixture()
def logits():
    g = torch.Generator().manual_seed(0)
    return [torch.randn(3, 11, generator=g) * 3 for _ in range(2)]


def test_prob_is_weighted_mean_of_probabilities(logits):
    w = [0.3, 0.7]
    expected = (w[0] * logits[0].softmax(-1) + w[1] * logits[1].softmax(-1)).log()
    torch.testing.assert_close(COMBINE["prob"](logits, w), expected)


def test_logprob_is_renormalised_weighted_log_mean(logits):
    w = [0.3, 0.7]
    mixed = w[0] * logits[0].log_softmax(-1) + w[1] * logits[1].log_softmax(-1)
    torch.testing.assert_close(COMBINE["logprob"](logits, w), mixed.log_softmax(-1))


def test_logit_mixes_raw_logits(logits):
    w = [0.25, 0.75]
    torch.testing.assert_close(
        COMBINE["logit"](logits, w), (w[0] * logits[0] + w[1] * logits[1]).log_softmax(-1)
    )


def test_max_takes_the_largest_weighted_probability(logits):
    w = [0.5, 0.5]
    best = torch.maximum(logits[0].softmax(-1), logits[1].softmax(-1))
    torch.testing.assert_close(COMBINE["max"](logits, w), (best / best.sum(-1, keepdim=True)).log())


@pytest.mark.parametrize("mode", sorted(COMBINE))
def test_every_mode_returns_normalised_log_probs(logits, mode):
    out = COMBINE[mode](logits, [0.4, 0.6])
    torch.testing.assert_close(out.exp().sum(-1), torch.ones(3))


@pytest.mark.parametrize("mode", sorted(COMBINE))
def test_weight_zero_member_is_ignored_even_with_minus_inf(logits, mode):
    other = logits[1].clone()
    other[:, 0] = float("-inf")  # a member that rules a token out must not matter at weight 0
    out = COMBINE[mode]([logits[0], other], [1.0, 0.0])
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, logits[0].log_softmax(-1))


@pytest.mark.parametrize("mode", sorted(COMBINE))
def test_identical_members_equal_one(logits, mode):
    torch.testing.assert_close(COMBINE[mode]([logits[0], logits[0]], [0.5, 0.5]), logits[0].log_softmax(-1))


def test_normalise_weights_and_errors():
    assert normalise_weights(None, 4) == [0.25] * 4
    assert normalise_weights([3, 1], 2) == [0.75, 0.25]
    with pytest.raises(ConfigError) as err:
        normalise_weights([1, -1, 2], 2)
    assert len(err.value.problems) == 2  # wrong count and a negative weight, reported together
    with pytest.raises(ConfigError, match="at least one weight must be positive"):
        normalise_weights([0, 0], 2)


def test_top_k_keeps_k_best():
    lp = torch.tensor([[0.1, 0.5, 0.2, 0.15, 0.05]]).log()
    kept = torch.isfinite(apply_top_k(lp, 2))
    assert kept.tolist() == [[False, True, True, False, False]]


def test_top_p_keeps_smallest_nucleus():
    lp = torch.tensor([[0.1, 0.5, 0.2, 0.15, 0.05]]).log()
    assert torch.isfinite(apply_top_p(lp, 0.6)).tolist() == [[False, True, True, False, False]]
    assert torch.isfinite(apply_top_p(lp, 0.5)).tolist() == [[False, True, False, False, False]]
    assert torch.isfinite(apply_top_p(lp, 0.01)).sum() == 1  # the best token always stays


def test_greedy_and_seeded_sampling(logits):
    lp = COMBINE["prob"](logits, [0.5, 0.5])
    assert next_tokens(lp).tolist() == lp.argmax(-1).tolist()
    draws = [next_tokens(lp, 1.0, generator=torch.Generator().manual_seed(7)) for _ in range(2)]
    assert torch.equal(*draws)
    # sampling follows the distribution: a token holding ~all the mass is drawn every time
    sharp = torch.full((1, 5), -30.0)
    sharp[0, 3] = 0.0
    g = torch.Generator().manual_seed(0)
    assert {int(next_tokens(sharp.log_softmax(-1), 1.0, generator=g)) for _ in range(20)} == {3}


def test_temperature_flattens_distribution():
    lp = torch.tensor([[0.9, 0.1]]).log()
    g = torch.Generator().manual_seed(0)
    hot = [int(next_tokens(lp, 50.0, generator=g)) for _ in range(400)]
    assert 0.35 < sum(hot) / len(hot) < 0.65  # near uniform at a high temperature
    assert math.isclose(float(lp.exp().sum()), 1.0, rel_tol=1e-6)
