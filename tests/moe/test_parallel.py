"""Expert parallelism: 2 gloo processes on 127.0.0.1 match a single-process run, outputs and gradients."""

import socket

import pytest
import torch
import torch.multiprocessing as mp

from lmfuse.moe import MoE, preset

WORLD = 2
S_PER_RANK = [13, 7]  # uneven token counts per rank → uneven all_to_all splits
EMPTY_RANK = [20, 0]  # rank 1 has no tokens but still owns experts that rank 0 routes to


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_case(name: str, splits: list[int]):
    """``mixtral-skewed``: every token picks experts 0 and 1, so rank 1's experts receive no rows."""
    torch.manual_seed(0)
    extra = dict(n_group=2, topk_group=1, num_experts_per_tok=2) if name == "deepseek_v3" else {}
    # backend "loop": the reference runs the same per-expert arithmetic as the ranks' local experts (the
    # fused backend folds the combine weight in elsewhere: equal up to fp32 rounding, tested in test_layer)
    cfg = preset(
        name.removesuffix("-skewed"), hidden_size=16, moe_intermediate_size=8, num_experts=4,
        backend="loop", **extra,
    )  # fmt: skip
    moe = MoE(cfg)
    moe.reset_parameters(std=0.3)
    x = torch.randn(sum(splits), 16)
    if name.endswith("-skewed"):
        x = x.abs()
        with torch.no_grad():
            moe.gate.weight.abs_()[2:].neg_()
    g = torch.randn(sum(splits), 16)
    return moe.eval(), x, g


def _worker(rank: int, port: int, cases: list[tuple[str, list[int]]], out_path: str) -> None:
    """Every case, one after another, in one process group (two interpreters start once, not per case)."""
    import torch.distributed as dist

    from lmfuse.moe.parallel import ExpertParallelMoE

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        for i, (name, splits) in enumerate(cases):
            moe, x, g = make_case(name, splits)
            ep = ExpertParallelMoE.from_moe(moe).eval()
            lo = sum(splits[:rank])
            xr = x[lo : lo + splits[rank]].clone().requires_grad_()
            y = ep(xr)
            (y * g[lo : lo + splits[rank]]).sum().backward()
            dist.all_reduce(ep.gate.weight.grad)  # the router is replicated: data-parallel all-reduce
            torch.save(
                dict(y=y.detach(), x_grad=xr.grad, gate_grad=ep.gate.weight.grad,
                     in_grad=ep.experts_in.grad, out_grad=ep.experts_out.grad),
                f"{out_path}.{i}.{rank}",
            )  # fmt: skip
    finally:
        dist.destroy_process_group()


CASES = [
    ("mixtral", S_PER_RANK),
    ("deepseek_v3", S_PER_RANK),
    ("mixtral", EMPTY_RANK),  # rank 1: no tokens, but rows for its experts
    ("mixtral-skewed", EMPTY_RANK[::-1]),  # rank 0: no tokens; rank 1: no rows for its experts
]


@pytest.fixture(scope="module")
def ranks_out(tmp_path_factory) -> str:
    """Where the two gloo ranks saved their outputs and gradients for each of ``CASES``."""
    out = str(tmp_path_factory.mktemp("expert-parallel") / "rank")
    mp.spawn(_worker, args=(free_port(), CASES, out), nprocs=WORLD, join=True)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("case", range(len(CASES)), ids=[f"{n}-splits{i}" for i, (n, _) in enumerate(CASES)])
def test_two_gloo_ranks_match_single_process(ranks_out, case):
    name, splits = CASES[case]
    moe, x, g = make_case(name, splits)
    x = x.clone().requires_grad_()
    y, _ = moe(x)
    (y * g).sum().backward()
    parts = [torch.load(f"{ranks_out}.{case}.{r}") for r in range(WORLD)]
    torch.testing.assert_close(torch.cat([p["y"] for p in parts]), y.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.cat([p["x_grad"] for p in parts]), x.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(
        torch.cat([p["in_grad"] for p in parts]), moe.experts_in.grad, rtol=1e-5, atol=1e-6
    )
    torch.testing.assert_close(
        torch.cat([p["out_grad"] for p in parts]), moe.experts_out.grad, rtol=1e-5, atol=1e-6
    )
    for p in parts:
        torch.testing.assert_close(p["gate_grad"], moe.gate.weight.grad, rtol=1e-5, atol=1e-6)
