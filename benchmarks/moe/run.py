"""MoE layer speed on CPU (fp32): forward and forward+backward time divided by the floor.

The floor is a dense SwiGLU FFN of the same width run on ``tokens·k`` rows — the same matmul pair
(``(S·k, M) × (M, 2I)`` then ``(S·k, I) × (I, M)``) and activation the experts do, with no routing.
Side by side in one run, interleaved repetition by repetition, best of ``--reps``:

- ``lmfuse``: ``lmfuse.moe.MoE`` (fp32 router, sort by expert, one ``grouped_mm``, reshape-and-sum combine);
- ``lmfuse-loop``: the same with the loop-over-unbound-experts backend;
- ``hf-mixtral``: transformers' own ``MixtralSparseMoeBlock`` (loop indexing ``W[e]`` + ``index_add_``);
- ``einsum``: the seed's GShard one-hot einsum formulation (capacity factor 1.25), where it fits in memory.

    python benchmarks/moe/run.py --smoke           # seconds; what the test runs
    python benchmarks/moe/run.py                   # the three issue shapes, 1 thread (tens of minutes)
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time

import torch
import torch.nn.functional as F

from lmfuse.moe import MoE, preset
from lmfuse.moe.oracle import einsum_moe

FULL = [(4096, 1024, 8, 2048), (4096, 1024, 64, 256), (16384, 2048, 32, 1024)]
SMOKE = [(128, 32, 4, 64)]
EINSUM_MAX_ELEMENTS = 2 * 10**8  # S·E·C of the one-hot masks; beyond this the einsum does not fit


def floor_fn(x, w_in, w_out, k):
    """Dense SwiGLU FFN on ``S·k`` rows: ``w_in (M, 2I)``, ``w_out (I, M)``."""
    rows = x.repeat(k, 1)
    gate, up = (rows @ w_in).chunk(2, -1)
    return (F.silu(gate) * up) @ w_out


def make_variants(s, m, e, i, k=2, seed=0):
    torch.manual_seed(seed)
    x = torch.randn(s, m)
    cfg = preset("mixtral", hidden_size=m, moe_intermediate_size=i, num_experts=e, num_experts_per_tok=k)
    moe = MoE(cfg).train()
    loop_cfg = preset("mixtral", hidden_size=m, moe_intermediate_size=i, num_experts=e, backend="loop")
    loop = MoE(loop_cfg).train()
    loop.load_state_dict(moe.state_dict())
    w_in = torch.randn(m, 2 * i) * 0.02
    w_out = torch.randn(i, m) * 0.02
    w_in.requires_grad_()
    w_out.requires_grad_()
    variants = {
        "floor": (lambda xx: floor_fn(xx, w_in, w_out, k), [w_in, w_out]),
        "lmfuse": (lambda xx: moe(xx)[0], list(moe.parameters())),
        "lmfuse-loop": (lambda xx: loop(xx)[0], list(loop.parameters())),
        "hf-mixtral": _hf_block(moe, m, e, i, k),
    }
    capacity = math.ceil(k * s / e * 1.25)
    if s * e * capacity <= EINSUM_MAX_ELEMENTS:
        variants["einsum"] = (
            lambda xx: einsum_moe(
                xx, moe.gate.weight, moe.experts_in, moe.experts_out, k, capacity, "swiglu"
            ),
            list(moe.parameters()),
        )
    return x, variants


def _hf_block(moe, m, e, i, k):
    from transformers import MixtralConfig
    from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock

    config = MixtralConfig(hidden_size=m, intermediate_size=i, num_local_experts=e, num_experts_per_tok=k)
    block = MixtralSparseMoeBlock(config)
    with torch.no_grad():
        block.gate.weight.copy_(moe.gate.weight)
        block.experts.gate_up_proj.copy_(moe.experts_in)
        block.experts.down_proj.copy_(moe.experts_out)
    return (lambda xx: block(xx.unsqueeze(0)).squeeze(0)), list(block.parameters())


def clock() -> float:
    """CPU time of this process with one thread (robust to the other users of shared cores), else wall."""
    return time.process_time() if torch.get_num_threads() == 1 else time.perf_counter()


def time_once(fn, params, x, grad_out, backward: bool) -> float:
    for p in params:
        p.grad = None
    start = clock()
    if backward:
        y = fn(x)
        y.backward(grad_out)
    else:
        with torch.no_grad():
            fn(x)
    return clock() - start


def bench_shape(shape, reps: int) -> dict:
    s, m, e, i = shape
    x, variants = make_variants(s, m, e, i)
    grad_out = torch.randn(s, m)
    out = {"shape": dict(tokens=s, hidden=m, experts=e, width=i), "fwd": {}, "fwd_bwd": {}}
    for mode, backward in (("fwd", False), ("fwd_bwd", True)):
        best = {name: float("inf") for name in variants}
        if not backward:  # warm-up once per variant
            for fn, params in variants.values():
                time_once(fn, params, x, None, False)
        for _ in range(reps):
            for name, (fn, params) in variants.items():
                g = grad_out.repeat(2, 1) if name == "floor" else grad_out
                best[name] = min(best[name], time_once(fn, params, x, g, backward))
        out[mode] = {n: dict(seconds=t, ratio=t / best["floor"]) for n, t in best.items()}
    return out


def table(results: list[dict]) -> str:
    names = ["lmfuse", "lmfuse-loop", "hf-mixtral", "einsum"]
    lines = [
        "| tokens, hidden, experts, width | mode | floor s | " + " | ".join(f"{n} ×" for n in names) + " |"
    ]
    lines.append("|" + "---|" * (3 + len(names)))
    for r in results:
        sh = r["shape"]
        label = f"{sh['tokens']}, {sh['hidden']}, {sh['experts']}, {sh['width']}"
        for mode in ("fwd", "fwd_bwd"):
            row = r[mode]
            cells = [f"{row[n]['ratio']:.2f}" if n in row else "n/a" for n in names]
            lines.append(f"| {label} | {mode} | {row['floor']['seconds']:.3f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, one repetition")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads; 1 = timed by process CPU time")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    shapes, reps = (SMOKE, 1) if args.smoke else (FULL, args.reps)
    results = []
    for shape in shapes:
        results.append(bench_shape(shape, reps))
        print(table(results[-1:]), flush=True)
    report = dict(
        date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), threads=torch.get_num_threads(),
        clock="process CPU time" if torch.get_num_threads() == 1 else "wall time",
        machine=f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        results=results,
    )  # fmt: skip
    print(table(results))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)
    return report


if __name__ == "__main__":
    main()
