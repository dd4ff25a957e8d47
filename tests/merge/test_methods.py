"""Invariants of the merge methods on plain tensors (no models): endpoints, reductions, DARE's law."""

from __future__ import annotations

import pytest
import torch

from lmfuse.merge.methods import TensorRng, get_method

G = torch.Generator().manual_seed(0)
BASE = torch.randn(64, 48, generator=G, dtype=torch.float64)
A = BASE + 0.1 * torch.randn(64, 48, generator=G, dtype=torch.float64)
B = BASE + 0.1 * torch.randn(64, 48, generator=G, dtype=torch.float64)


def run(method: str, tensors, base, per_model, seed: int = 0, name: str = "w", **params):
    m = get_method(method)
    defaults = {k: p.default for k, p in m.global_params.items()}
    model_defaults = {k: p.default for k, p in m.model_params.items()}
    per_model = [{**model_defaults, **p} for p in per_model]
    return m.fn(list(tensors), base, per_model, {**defaults, **params}, TensorRng(seed, name))


def test_slerp_endpoints_and_colinear_midpoint_is_linear():
    assert torch.equal(run("slerp", [B], A, [{}], t=0.0), A)
    assert torch.equal(run("slerp", [B], A, [{}], t=1.0), B)
    mid = run("slerp", [B], A, [{}], t=0.5)
    assert not torch.allclose(mid, 0.5 * A + 0.5 * B)  # not colinear: a real spherical path
    assert mid.norm() > (0.5 * A + 0.5 * B).norm()  # SLERP keeps the norm that averaging loses
    colinear = 2.5 * A
    linear = run("linear", [A, colinear], None, [{"weight": 0.5}, {"weight": 0.5}])
    assert torch.allclose(run("slerp", [colinear], A, [{}], t=0.5), linear, rtol=0, atol=1e-12)


def test_task_arithmetic_is_base_plus_weighted_deltas():
    out = run("task_arithmetic", [A, B], BASE, [{"weight": 0.3}, {"weight": 0.7}], **{"lambda": 2.0})
    assert torch.allclose(out, BASE + 2.0 * (0.3 * (A - BASE) + 0.7 * (B - BASE)))


def test_density_one_reduces_to_task_arithmetic():
    w = [{"weight": 0.4, "density": 1.0}, {"weight": 0.6, "density": 1.0}]
    ta = run("task_arithmetic", [A, B], BASE, w)
    assert torch.equal(run("dare_linear", [A, B], BASE, w), ta)
    # TIES elects a sign per entry: with density 1 and normalize false it is task arithmetic exactly
    # where both task vectors agree in sign; elsewhere only the elected (majority-mass) sign survives.
    ties = run("ties", [A, B], BASE, w, normalize=False)
    agree = torch.sign(A - BASE) == torch.sign(B - BASE)
    assert agree.any() and (~agree).any()
    assert torch.allclose(ties[agree], ta[agree])
    assert not torch.allclose(ties[~agree], ta[~agree])
    assert torch.equal(run("dare_ties", [A, B], BASE, w, normalize=False), ties)
    # One model: no conflict, so TIES and DARE-TIES at density 1 equal task arithmetic.
    one = [{"weight": 0.8, "density": 1.0}]
    ta1 = run("task_arithmetic", [A], BASE, one)
    assert torch.allclose(run("ties", [A], BASE, one, normalize=False), ta1)
    assert torch.allclose(run("dare_ties", [A], BASE, one, normalize=False), ta1)


def test_ties_trim_keeps_the_top_density_fraction_and_normalises_over_agreeing_weights():
    d = 0.25
    out = run("ties", [A], BASE, [{"weight": 0.5, "density": d}])  # normalize true: ÷ 0.5 where kept
    delta = (out - BASE).reshape(-1)
    tau = (A - BASE).reshape(-1)
    kept = delta != 0
    assert kept.sum() == int(d * tau.numel())
    assert tau.abs()[kept].min() >= tau.abs()[~kept].max()
    assert torch.allclose(delta[kept], tau[kept])


def test_dare_kept_fraction_and_expectation():
    base = torch.zeros(1000, 1000)
    tau = torch.randn(1000, 1000, generator=torch.Generator().manual_seed(1))
    d = 0.3
    out = run("dare_linear", [base + tau], base, [{"density": d}])
    kept = (out != 0).float().mean().item()
    assert abs(kept - d) < 0.01 * d  # within 1% of the density on a million entries
    assert torch.allclose(out[out != 0], tau[out != 0] / d)  # rescaled by 1/d
    # Expectation: averaged over many seeds, DARE's task vector approaches τ.
    small_tau = tau[:20, :20]
    mean = (
        sum(
            run("dare_linear", [small_tau], torch.zeros(20, 20), [{"density": d}], seed=s)
            for s in range(2000)
        )
        / 2000
    )
    assert (mean - small_tau).abs().max() < 0.15 * small_tau.abs().max()
    assert abs(float(mean.sum() - small_tau.sum())) < 0.05 * float(small_tau.abs().sum())


def test_dare_masks_depend_only_on_seed_name_and_model():
    w = [{"density": 0.5}, {"density": 0.5}]
    one = run("dare_ties", [A, B], BASE, w, seed=7, name="layer.3.mlp")
    assert torch.equal(one, run("dare_ties", [A, B], BASE, w, seed=7, name="layer.3.mlp"))
    assert not torch.equal(one, run("dare_ties", [A, B], BASE, w, seed=8, name="layer.3.mlp"))
    assert not torch.equal(one, run("dare_ties", [A, B], BASE, w, seed=7, name="layer.4.mlp"))


def test_model_stock_ratio_and_karcher_of_two_is_slerp_midpoint():
    out = run("model_stock", [A, B], BASE, [{}, {}])
    ta, tb = (A - BASE).reshape(-1), (B - BASE).reshape(-1)
    cos = float(ta @ tb / (ta.norm() * tb.norm()))
    t = 2 * cos / (1 + cos)
    assert torch.allclose(out, t * (A + B) / 2 + (1 - t) * BASE)
    # The Karcher mean of two unit-norm tensors with equal weights is their SLERP midpoint.
    ua, ub = A / A.norm(), B / B.norm()
    k = run("karcher", [ua, ub], None, [{}, {}], max_iter=50, tol=1e-12)
    assert torch.allclose(k, run("slerp", [ub], ua, [{}], t=0.5), atol=1e-8)


@pytest.mark.parametrize("method", ["breadcrumbs", "della", "della_linear", "breadcrumbs_ties"])
def test_sparse_methods_drop_entries_and_stay_near_the_deltas(method):
    params = {"density": 0.5, **({"gamma": 0.05} if "bread" in method else {"epsilon": 0.1})}
    out = run(method, [A], BASE, [params])
    delta = out - BASE
    frac = (delta != 0).float().mean().item()
    assert 0.4 < frac < 0.6
    if "bread" in method:  # the largest 5% are dropped as outliers
        tau = (A - BASE).abs().reshape(-1)
        top = torch.argsort(tau, descending=True)[: int(0.05 * tau.numel())]
        assert delta.reshape(-1)[top].abs().max() == 0


def test_nuslerp_weights_and_row_wise():
    # Equal weights, no base: the SLERP midpoint; with a base: SLERP of the task vectors.
    assert torch.allclose(
        run("nuslerp", [A, B], None, [{"weight": 1}, {"weight": 1}]), run("slerp", [B], A, [{}], t=0.5)
    )
    with_base = run("nuslerp", [A, B], BASE, [{"weight": 1}, {"weight": 3}])
    assert torch.allclose(with_base, BASE + run("slerp", [B - BASE], A - BASE, [{}], t=0.75))
    rows = run(
        "nuslerp", [A, B], None, [{"weight": 1}, {"weight": 1}], nuslerp_flatten=False, nuslerp_row_wise=True
    )
    assert torch.allclose(rows[3], run("slerp", [B[3]], A[3], [{}], t=0.5))


@pytest.mark.parametrize(
    "method",
    [
        "linear",
        "task_arithmetic",
        "ties",
        "dare_linear",
        "dare_ties",
        "breadcrumbs",
        "breadcrumbs_ties",
        "della",
    ],
)
def test_in_place_merge_gives_the_same_bits_and_spares_plain_inputs(method, monkeypatch):
    """An ``Owned`` list lets a method overwrite its inputs; the bits must not change, whatever the
    block size of the disjoint merge, and a plain list must come back untouched."""
    from lmfuse.merge.methods import Owned, common

    g = torch.Generator().manual_seed(1)
    base = torch.randn(301, 67, generator=g) * 0.02
    models = [base + 0.002 * torch.randn(301, 67, generator=g) for _ in range(3)]
    models[2][::5] = base[::5]  # exact zeros in one task vector: sign ties in the election
    for m in [*models[:2], base]:  # signed zeros must keep their bits too (w = -0.3 flips +0)
        m[0, :5] = -0.0
    models[2][0, :5] = 0.0
    kept = [m.clone() for m in models]
    per = [{"weight": 0.6, "density": 0.5, "epsilon": 0.1}, {"weight": 0.4, "density": 0.7}, {"weight": -0.3}]
    plain = run(method, models, base, per, seed=3)
    assert all(torch.equal(m, k) for m, k in zip(models, kept, strict=True))
    monkeypatch.setattr(common, "CHUNK", 1001)  # blocks that split vector widths and rows
    owned = Owned((m.clone() for m in models), reload_base=base.clone)  # base may be released and re-read
    m = get_method(method)
    defaults = {k: p.default for k, p in m.global_params.items()}
    per_full = [{**{k: p.default for k, p in m.model_params.items()}, **p} for p in per]
    in_place = m.fn(owned, base.clone(), per_full, defaults, TensorRng(3, "w"))
    assert torch.equal(plain.view(torch.int32), in_place.view(torch.int32))


def test_ties_election_of_exactly_zero_mass_goes_to_the_positive_sign():
    """Σ w_i τ̂_i = 0 exactly (0.5 · 1 + 0.5 · (−1)): the positive side is elected, so the entry
    becomes the positive model's value (÷ its weight), not the base."""
    base = torch.zeros(2, 3)
    up, down = base.clone(), base.clone()
    up[0, 0], down[0, 0] = 1.0, -1.0  # equal mass on both sides: an election of exactly 0
    up[1, 1], down[1, 1] = 2.0, -1.0  # positive majority; control
    up[1, 2], down[1, 2] = 1.0, -2.0  # negative majority; control
    w = [{"weight": 0.5, "density": 1.0}, {"weight": 0.5, "density": 1.0}]
    out = run("ties", [up, down], base, w)
    assert out[0, 0] == 1.0 and out[1, 1] == 2.0 and out[1, 2] == -2.0
    assert torch.equal(run("dare_ties", [up, down], base, w), out)


def test_ties_election_sums_the_rounded_weighted_terms_in_model_order():
    """The election is the sign of fl(fl(w_1 τ̂_1) + fl(w_2 τ̂_2)) in the working dtype: each weighted
    term rounded, then added (what mergekit computes); a fused multiply-add elects other signs where
    the sum nearly cancels."""
    g = torch.Generator().manual_seed(5)
    a = (torch.randn(200_000, generator=g) * 0.002).to(torch.bfloat16).float()
    b = (-1.5 * a + 1e-6 * torch.randn(200_000, generator=g)).to(torch.bfloat16).float()
    w1, w2 = torch.tensor(0.6), torch.tensor(0.4)
    rounded = (a * w1 + b * w2) >= 0
    # A fused multiply-add's sign: that of fl(w_1 τ̂_1) + w_2 τ̂_2 unrounded (exact signs in float64).
    fused = (a * w1).double() + b.double() * w2.double() >= 0
    assert (rounded != fused).any()  # this data does tell the two apart
    base = torch.zeros_like(a)
    out = run("ties", [a, b], base, [{"weight": 0.6, "density": 1.0}, {"weight": 0.4, "density": 1.0}])
    opposite = a * b < 0  # one model on each side: the output takes the elected side's sign
    assert (opposite & (rounded != fused)).any()
    assert torch.equal(out[opposite] > 0, rounded[opposite])


def test_ties_trim_keeps_the_first_k_of_a_descending_sort_among_tied_magnitudes():
    """Many entries share the k-th magnitude: the kept ones are the first k of
    ``torch.sort(|τ|, descending=True)`` (the choice mergekit makes with the same torch)."""
    g = torch.Generator().manual_seed(2)
    tau = torch.randint(-3, 4, (257, 129), generator=g).float()  # magnitudes 0..3: ties at every cut
    for d in (0.3, 0.5, 0.71):
        out = run("ties", [tau], torch.zeros_like(tau), [{"weight": 1.0, "density": d}])
        k = int(d * tau.numel())
        order = torch.sort(tau.abs().reshape(-1), descending=True).indices[:k]
        expected = torch.zeros(tau.numel())
        expected[order] = tau.reshape(-1)[order]
        assert torch.equal(out.reshape(-1), expected)
