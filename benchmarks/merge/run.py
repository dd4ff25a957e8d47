"""Benchmark: `lmfuse merge` vs mergekit (`mergekit-yaml`) on the same YAML, side by side.

Writes three random Llama checkpoints in bf16 (a base and two "fine-tunes" = base + small noise on
every tensor), then for each method (linear, ties, dare_ties) runs, as separate processes measured by
/usr/bin/time (wall time, peak RSS):

- ``lmfuse``:   ``python -m lmfuse merge CONFIG OUT``
- ``mergekit``: ``mergekit-yaml CONFIG OUT --random-seed 0`` from its own venv (LGPL, never imported)

on the same recipe (computation in float32, output bfloat16), and compares the outputs tensor by
tensor: names, and the max difference in units in the last place (ulp) of bfloat16 for the
deterministic methods (linear, ties). DARE draws its masks from different random number generators,
so for dare_ties it compares statistics instead: the fraction of entries that differ from the base
(kept fraction) and the mean/std of the merged task vector, tool by tool. Absolute times on a shared
machine are noise; read the ratios. ``--smoke`` runs tiny models in seconds (used by the tests).

    python benchmarks/merge/run.py --smoke --mergekit ''
    python benchmarks/merge/run.py --size 1b --workdir /work/tmp/merge-bench --json results.json

Methods alternate which tool runs first (lmfuse first for the 1st, 3rd, ... method, mergekit first for
the others), so a load that drifts during the run does not favour one tool; each measurement records
the 1-minute load average right after it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
import zlib
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from lmfuse.core.checkpoint import CheckpointReader  # noqa: E402
from lmfuse.core.export import ExportTensor, write_safetensors  # noqa: E402

DEFAULT_MERGEKIT = Path("/work/tmp/mergekit-venv/bin/mergekit-yaml")
SIZES = {
    "smoke": dict(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                  num_attention_heads=4, num_key_value_heads=2),
    # ~1.0B parameters: Llama-2-style 2048 wide, 16 layers, 32k vocabulary, untied head.
    "1b": dict(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=16,
               num_attention_heads=16, num_key_value_heads=16),
    # The 1b shapes with one decoder layer: the same largest tensors (the 32000 x 2048 embedding and
    # lm_head, which set lmfuse's peak memory), 182M parameters, for a loaded machine.
    "1b-1layer": dict(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=1,
                      num_attention_heads=16, num_key_value_heads=16),
}  # fmt: skip
METHODS = {
    "linear": ("", "    parameters: {weight: %s}\n", "parameters: {normalize: true}\n"),
    "ties": ("base_model: {base}\n", "    parameters: {weight: %s, density: 0.5}\n",
             "parameters: {normalize: true, lambda: 1.0}\n"),
    "dare_ties": ("base_model: {base}\n", "    parameters: {weight: %s, density: 0.5}\n",
                  "parameters: {normalize: true, lambda: 1.0, rescale: true}\n"),
}  # fmt: skip


def make_family(work: Path, fields: dict) -> dict[str, Path]:
    """``base`` and fine-tunes ``ft1``, ``ft2`` (base + N(0, 0.002²) on every tensor), bf16, untied."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model("llama", **fields, max_position_embeddings=2048, tie_word_embeddings=False)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    shapes = {n: tuple(p.shape) for n, p in model.state_dict().items()}
    config.architectures = [type(model).__name__]
    config.dtype = "bfloat16"
    out = {}
    for k, name in enumerate(["base", "ft1", "ft2"]):
        d = work / name
        out[name] = d
        if (d / "config.json").is_file():
            continue
        tensors = [ExportTensor(n, s, torch.bfloat16, _random(n, s, k)) for n, s in shapes.items()]
        write_safetensors(tensors, d, progress=True)
        config.save_pretrained(d)
    return out


def _random(name: str, shape: tuple[int, ...], k: int):
    def load() -> torch.Tensor:
        seed = zlib.crc32(name.encode()) % 2**31
        base = torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 0.02
        if k:
            base += 0.002 * torch.randn(shape, generator=torch.Generator().manual_seed(seed + k))
        return base.to(torch.bfloat16)

    return load


def recipe(method: str, family: dict[str, Path]) -> str:
    head, per_model, params = METHODS[method]
    text = f"merge_method: {method}\n" + head.format(base=family["base"]) + "models:\n"
    if head:
        text += f"  - model: {family['base']}\n"
    for name, w in (("ft1", "0.6"), ("ft2", "0.4")):
        text += f"  - model: {family[name]}\n" + per_model % w
    return text + params + "dtype: float32\nout_dtype: bfloat16\n"


def measure(cmd: list[str], log: Path) -> dict:
    """Run ``cmd`` under ``/usr/bin/time``: wall seconds and peak RSS of the command itself."""
    stats = log.with_suffix(".time")
    with log.open("w") as fh:
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1"}
        proc = subprocess.run(
            ["/usr/bin/time", "-o", str(stats), "-f", "%e %M", *cmd],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
        )
    wall, rss_kb = stats.read_text().split()[-2:]
    return {"wall_s": float(wall), "peak_rss_mb": round(int(rss_kb) / 1024, 1), "exit": proc.returncode,
            "load_avg_1min_after": round(os.getloadavg()[0], 2)}  # fmt: skip


def ulps(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """|x − y| in bf16 ulps at the larger magnitude, floored at 2^-16 of the tensor's largest value
    (below that, results are float32 cancellation noise whose relative error means nothing)."""
    x, y = x.float(), y.float()
    floor = max(float(x.abs().max()), float(y.abs().max())) * 2.0**-16
    m = torch.maximum(torch.maximum(x.abs(), y.abs()), torch.tensor(max(floor, 1e-30)))
    _, exponent = torch.frexp(m)  # m = f · 2^e, f in [0.5, 1): a bf16 ulp is 2^(e − 8)
    return (x - y).abs() / torch.ldexp(torch.ones_like(m), exponent - 8)


def compare_exact(a: Path, b: Path) -> dict:
    """Max |a − b|, max ulp distance and the fraction of entries more than 1 ulp apart."""
    ra, rb = CheckpointReader(a), CheckpointReader(b)
    names_a, names_b = set(ra.keys()), set(rb.keys())
    worst_ulp, worst_abs, where, over, total = 0.0, 0.0, "", 0, 0
    for n in sorted(names_a & names_b):
        x, y = ra.get(n), rb.get(n)
        if x.dtype != torch.bfloat16 or y.dtype != torch.bfloat16:
            return {"error": f"{n}: dtypes {x.dtype} vs {y.dtype}"}
        u = ulps(x, y)
        over += int((u > 1).sum())
        total += u.numel()
        if float(u.max()) > worst_ulp:
            worst_ulp, where = float(u.max()), n
        worst_abs = max(worst_abs, float((x.float() - y.float()).abs().max()))
    return {"same_names": names_a == names_b, "tensors": len(names_a & names_b), "max_ulp": round(worst_ulp, 2),
            "over_1_ulp_fraction": over / max(total, 1), "max_abs_diff": worst_abs, "worst_tensor": where}  # fmt: skip


def dare_stats(out: Path, base: Path) -> dict:
    """Kept fraction (entries differing from the base) and mean/std of the merged task vector."""
    ro, rb = CheckpointReader(out), CheckpointReader(base)
    changed = total = 0
    s1 = s2 = 0.0
    for n in list(ro.keys()):
        delta = ro.get(n).float() - rb.get(n).float()
        changed += int((delta != 0).sum())
        total += delta.numel()
        s1 += float(delta.sum())
        s2 += float((delta * delta).sum())
    mean = s1 / total
    return {
        "changed_fraction": round(changed / total, 5),
        "delta_mean": mean,
        "delta_std": (s2 / total - mean * mean) ** 0.5,
    }


def run_method(
    method: str, family: dict[str, Path], work: Path, mergekit: Path | None, mergekit_first: bool = False
) -> dict:
    """One method through both tools (``mergekit_first``: in that order, to spread load drift)."""
    cfg = work / f"{method}.yaml"
    cfg.write_text(recipe(method, family))
    row: dict = {"method": method}
    outs = {}
    tools = [("lmfuse", [sys.executable, "-m", "lmfuse", "merge", str(cfg)])]
    if mergekit:
        tools.append(("mergekit", [str(mergekit), str(cfg)]))
        if mergekit_first:
            tools.reverse()
    row["order"] = [t for t, _ in tools]
    for tool, cmd in tools:
        out = work / f"out-{method}-{tool}"
        shutil.rmtree(out, ignore_errors=True)
        extra = ["--random-seed", "0"] if tool == "mergekit" else []
        row[tool] = measure([*cmd, str(out), *extra], work / f"{method}-{tool}.log")
        outs[tool] = out
    if mergekit and all(row[t]["exit"] == 0 for t in outs):
        if method.startswith("dare"):
            row["stats"] = {t: dare_stats(o, family["base"]) for t, o in outs.items()}
        else:
            row["compare"] = compare_exact(outs["lmfuse"], outs["mergekit"])
        row["wall_ratio"] = round(row["lmfuse"]["wall_s"] / max(row["mergekit"]["wall_s"], 1e-9), 3)
        row["rss_ratio"] = round(row["lmfuse"]["peak_rss_mb"] / row["mergekit"]["peak_rss_mb"], 3)
    elif row["lmfuse"]["exit"] == 0 and method.startswith("dare"):
        row["stats"] = {"lmfuse": dare_stats(outs["lmfuse"], family["base"])}
    for o in outs.values():
        shutil.rmtree(o, ignore_errors=True)
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=sorted(SIZES), default="1b")
    p.add_argument("--smoke", action="store_true", help="same as --size smoke")
    p.add_argument("--methods", default="linear,ties,dare_ties")
    p.add_argument("--workdir", default="/work/tmp/merge-bench", help="checkpoints go here (not the repo)")
    p.add_argument("--mergekit", default=str(DEFAULT_MERGEKIT), help="mergekit-yaml path ('' to skip)")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    p.add_argument("--keep", action="store_true", help="keep the source checkpoints")
    args = p.parse_args(argv)
    from lmfuse.core.atomic import atomic_write_text, check_output_option

    check_output_option(args.json, args.overwrite, p.error)  # before the work, not after
    size = "smoke" if args.smoke else args.size
    work = Path(args.workdir) / size
    work.mkdir(parents=True, exist_ok=True)
    mergekit = Path(args.mergekit) if args.mergekit and Path(args.mergekit).is_file() else None
    start = time.time()
    family = make_family(work, SIZES[size])
    base = CheckpointReader(family["base"])
    params = sum(math.prod(base.meta(n)[0]) for n in list(base.keys()))
    results = {"size": size, "parameters": params, "machine": f"{platform.node()} {platform.machine()}",
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "mergekit": str(mergekit or "skipped"),
               "load_avg_1min_start": round(os.getloadavg()[0], 2), "torch_threads": torch.get_num_threads(),
               "rows": [run_method(m, family, work, mergekit, mergekit_first=i % 2 == 1)
                        for i, m in enumerate(args.methods.split(","))]}  # fmt: skip
    results["seconds"] = round(time.time() - start, 1)
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        atomic_write_text(args.json, text + "\n")  # never a half-written result file
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if all(r["lmfuse"]["exit"] == 0 for r in results["rows"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
