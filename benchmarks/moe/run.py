"""MoE layer speed on CPU (fp32): forward, and forward+backward *with the input gradient* (a layer inside a
network needs dx), each divided by the dense floor and by transformers' block.

The floor is a dense SwiGLU FFN of the same width run on ``tokens·k`` rows — the same matmul pair
(``(S·k, M) × (M, 2I)`` then ``(S·k, I) × (I, M)``) and activation the experts do, with no routing; its
backward also produces dx. Side by side in one run, interleaved repetition by repetition; each ratio is
taken within one repetition and the table shows the median over ``--reps`` of those ratios:

- ``lmfuse``: ``lmfuse.moe.MoE`` with its default backend (``fused``: fp32 router, sort by expert, then per
  expert gather → FFN → weighted ``index_add``, hand-written per-expert backward);
- ``hf-mixtral``: transformers' own ``MixtralSparseMoeBlock`` (loop indexing ``W[e]`` + ``index_add_``);
- with ``--all`` also ``lmfuse-grouped`` (every step for all experts at once, ``grouped_mm``),
  ``lmfuse-loop`` (the loop-over-unbound-experts backend) and ``einsum`` (the seed's
  GShard one-hot einsum formulation, capacity factor 1.25, where it fits in memory).

    python benchmarks/moe/run.py --smoke           # seconds; what the test runs
    python benchmarks/moe/run.py                   # the three issue shapes, 1 thread (tens of minutes)
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
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


def make_variants(s, m, e, i, k=2, seed=0, extra=False):
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
        "hf-mixtral": _hf_block(moe, m, e, i, k),
    }
    if extra:
        variants["lmfuse-loop"] = (lambda xx: loop(xx)[0], list(loop.parameters()))
        grouped = MoE(
            preset("mixtral", hidden_size=m, moe_intermediate_size=i, num_experts=e, backend="grouped")
        )
        grouped.train().load_state_dict(moe.state_dict())
        variants["lmfuse-grouped"] = (lambda xx: grouped(xx)[0], list(grouped.parameters()))
    capacity = math.ceil(k * s / e * 1.25)
    if extra and s * e * capacity <= EINSUM_MAX_ELEMENTS:
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
    """One call; with ``backward`` the input gradient is computed too (``x`` requires grad)."""
    for p in params:
        p.grad = None
    x.grad = None
    start = clock()
    if backward:
        y = fn(x)
        y.backward(grad_out)
    else:
        with torch.no_grad():
            fn(x)
    return clock() - start


def bench_shape(shape, reps: int, extra: bool = False) -> dict:
    s, m, e, i = shape
    x, variants = make_variants(s, m, e, i, extra=extra)
    x.requires_grad_()
    grad_out = torch.randn(s, m)
    out = {"shape": dict(tokens=s, hidden=m, experts=e, width=i), "fwd": {}, "fwd_bwd": {}}
    for mode, backward in (("fwd", False), ("fwd_bwd", True)):
        times = {name: [] for name in variants}
        for fn, params in variants.values():  # warm-up once per variant and mode
            g = grad_out.repeat(2, 1) if fn is variants["floor"][0] else grad_out
            time_once(fn, params, x, g, backward)
        for _ in range(reps):
            for name, (fn, params) in variants.items():
                g = grad_out.repeat(2, 1) if name == "floor" else grad_out
                times[name].append(time_once(fn, params, x, g, backward))
        out[mode] = {
            n: dict(
                seconds=statistics.median(t),
                ratio=statistics.median(a / b for a, b in zip(t, times["floor"], strict=True)),
                vs_hf=statistics.median(a / b for a, b in zip(t, times["hf-mixtral"], strict=True)),
            )
            for n, t in times.items()
        }
    return out


NAMES = ["lmfuse", "hf-mixtral", "lmfuse-grouped", "lmfuse-loop", "einsum"]


def table(results: list[dict]) -> str:
    names = [n for n in NAMES if any(n in r["fwd"] for r in results)]
    lines = [
        "| tokens, hidden, experts, width | mode | floor s | "
        + " | ".join(f"{n} ÷ floor" for n in names)
        + " | lmfuse ÷ hf-mixtral |"
    ]
    lines.append("|" + "---|" * (4 + len(names)))
    for r in results:
        sh = r["shape"]
        label = f"{sh['tokens']}, {sh['hidden']}, {sh['experts']}, {sh['width']}"
        for mode in ("fwd", "fwd_bwd"):
            row = r[mode]
            cells = [f"{row[n]['ratio']:.2f}" if n in row else "n/a" for n in names]
            lines.append(
                f"| {label} | {mode} | {row['floor']['seconds']:.3f} | " + " | ".join(cells)
                + f" | {row['lmfuse']['vs_hf']:.2f} |"
            )  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, one repetition")
    parser.add_argument("--reps", type=int, default=5, help="interleaved repetitions (median of ratios)")
    parser.add_argument("--all", action="store_true", help="also the loop backend and the einsum oracle")
    parser.add_argument("--shapes", help="tokens,hidden,experts,width;... instead of the issue's three")
    parser.add_argument("--threads", type=int, default=1, help="torch threads; 1 = timed by process CPU time")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    args = parser.parse_args(argv)
    from lmfuse.core.atomic import atomic_write_text, check_output_option

    check_output_option(args.json, args.overwrite, parser.error)  # before the work, not after
    if args.threads:
        torch.set_num_threads(args.threads)
    shapes, reps = (SMOKE, 1) if args.smoke else (FULL, args.reps)
    if args.shapes:
        shapes = [tuple(int(v) for v in part.split(",")) for part in args.shapes.split(";")]
    results = []
    for shape in shapes:
        results.append(bench_shape(shape, reps, args.all or args.smoke))
        print(table(results[-1:]), flush=True)
    report = dict(
        date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), threads=torch.get_num_threads(),
        clock="process CPU time" if torch.get_num_threads() == 1 else "wall time",
        machine=f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        statistic=f"median over {reps} interleaved repetitions of per-repetition ratios; fwd_bwd includes dx",
        results=results,
    )  # fmt: skip
    print(table(results))
    if args.json:
        atomic_write_text(args.json, json.dumps(report, indent=2) + "\n")  # never a half-written result file
    return report


if __name__ == "__main__":
    main()
