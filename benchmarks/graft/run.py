"""Benchmark: `lmfuse graft dus` vs mergekit passthrough (`mergekit-yaml`) vs a plain copy, side by side.

Each case writes a random checkpoint with the exact tensor shapes of a real model (bf16, our own
streaming writer), then runs, as separate processes measured by /usr/bin/time (wall time, peak RSS):

- ``copy``: ``cp -r`` of lmfuse's output directory (the same bytes), the floor;
- ``lmfuse``: ``python -m lmfuse graft dus IN OUT --drop M``;
- ``mergekit``: ``mergekit-yaml`` with the equivalent passthrough recipe (default options), if its
  separate environment exists (it is LGPL and never imported here).

and checks that both tools wrote the same tensors (sampled hashes). Absolute times on a shared machine
are noise; read the ratios. ``--smoke`` runs a tiny case in seconds (used by the tests).

    python benchmarks/graft/run.py --smoke
    python benchmarks/graft/run.py --cases 1b,7b --workdir /work/bench-graft --json results.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = str(Path(__file__).resolve().relative_to(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from lmfuse.core.checkpoint import CheckpointReader  # noqa: E402
from lmfuse.core.export import ExportTensor, write_safetensors  # noqa: E402

DEFAULT_MERGEKIT = Path("/work/bench-venvs/mergekit/bin/mergekit-yaml")

CASES = {
    # name: (config fields, layers dropped); shapes of Llama-3.2-1B and Mistral-7B-v0.1
    "smoke": (dict(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                   num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False), 1),
    "1b": (dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                num_attention_heads=32, num_key_value_heads=8, head_dim=64, tie_word_embeddings=True), 4),
    "7b": (dict(model_type="mistral", vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                num_attention_heads=32, num_key_value_heads=8, tie_word_embeddings=False), 8),
}  # fmt: skip


def make_checkpoint(directory: Path, fields: dict, seed: int = 0) -> int:
    """A random bf16 Llama/Mistral-shaped checkpoint (2 GB shards); returns its parameter count."""
    from transformers import AutoConfig, AutoModelForCausalLM

    fields = dict(fields)
    config = AutoConfig.for_model(fields.pop("model_type", "llama"), **fields, max_position_embeddings=4096)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    shapes = {n: tuple(p.shape) for n, p in model.state_dict().items()}
    config.architectures = [type(model).__name__]
    if config.tie_word_embeddings:
        shapes.pop("lm_head.weight", None)
    gen = torch.Generator().manual_seed(seed)

    def random(shape: tuple[int, ...]):
        return lambda: torch.randn(shape, generator=gen, dtype=torch.float32).to(torch.bfloat16) * 0.02

    tensors = [ExportTensor(n, s, torch.bfloat16, random(s)) for n, s in shapes.items()]
    write_safetensors(tensors, directory, max_shard_bytes=2 * 1024**3, progress=True)
    config.dtype = "bfloat16"
    config.save_pretrained(directory)
    return sum(t.numel for t in tensors)


def measure(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> dict:
    """Run ``cmd`` under ``/usr/bin/time``: wall seconds and peak RSS of the command itself.

    (``wait4`` from this process would report at least this process's own RSS, inherited at fork.)
    """
    stats = log.with_suffix(".time")
    with log.open("w") as fh:
        proc = subprocess.run(
            ["/usr/bin/time", "-o", str(stats), "-f", "%e %M", *cmd],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
        )
    wall, rss_kb = stats.read_text().split()[-2:]
    return {"wall_s": float(wall), "peak_rss_mb": round(int(rss_kb) / 1024, 1), "exit": proc.returncode}


def mergekit_recipe(src: Path, n: int, drop: int) -> str:
    return (
        "merge_method: passthrough\ndtype: bfloat16\nslices:\n"
        f"  - sources:\n      - model: {src}\n        layer_range: [0, {n - drop}]\n"
        f"  - sources:\n      - model: {src}\n        layer_range: [{drop}, {n}]\n"
    )


def tensor_digests(directory: Path, sample: int) -> dict[str, str]:
    """sha256 of ``sample`` tensors spread over the checkpoint (all when ``sample`` is 0), by name."""
    reader = CheckpointReader(directory)
    names = sorted(reader.keys())
    picked = names[:: max(1, len(names) // sample)] if sample else names
    return {
        n: hashlib.sha256(reader.get(n).contiguous().view(torch.uint8).numpy()).hexdigest() for n in picked
    }


def compare(lmfuse: dict[str, str], lmfuse_names: set[str], other: Path) -> dict:
    """Same tensor names, and the same bytes for the sampled tensors, in ``other``'s checkpoint."""
    reader = CheckpointReader(other)
    names = set(reader.keys())
    digest = {
        n: hashlib.sha256(reader.get(n).contiguous().view(torch.uint8).numpy()).hexdigest()
        for n in lmfuse
        if n in names
    }
    return {"same_names": names == lmfuse_names, "compared": len(digest), "equal": digest == lmfuse,
            "only_lmfuse": sorted(lmfuse_names - names)[:3], "only_mergekit": sorted(names - lmfuse_names)[:3]}  # fmt: skip


def free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


def run_case(name: str, work: Path, mergekit: Path | None, keep: bool) -> dict:
    fields, drop = CASES[name]
    n = fields["num_hidden_layers"]
    work.mkdir(parents=True, exist_ok=True)
    src = work / f"{name}-src"
    if not (src / "config.json").is_file():
        shutil.rmtree(src, ignore_errors=True)
        t = time.perf_counter()
        params = make_checkpoint(src, fields)
        print(
            f"[{name}] wrote random source ({params:,} parameters) in {time.perf_counter() - t:.0f}s",
            flush=True,
        )
    if not (src / "tokenizer.json").is_file():  # both tools copy it; without one mergekit fails late
        from lmfuse.testing import char_tokenizer

        char_tokenizer().save_pretrained(src)
    result: dict = {
        "case": name,
        "layers": f"{n}->{2 * (n - drop)}",
        "source_bytes": CheckpointReader(src).total_bytes(),
    }
    out_l, out_m, out_c = work / f"{name}-lmfuse", work / f"{name}-mergekit", work / f"{name}-copy"
    for d in (out_l, out_m, out_c):
        shutil.rmtree(d, ignore_errors=True)
    cmd = [sys.executable, "-m", "lmfuse", "graft", "dus", str(src), str(out_l), "--drop", str(drop)]
    # the child imports this checkout's lmfuse; this process's environment is left as it was
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    result["lmfuse"] = measure(cmd, work / f"{name}-lmfuse.log", env)
    result["output_bytes"] = out_bytes = sum(f.stat().st_size for f in out_l.iterdir())
    print(f"[{name}] lmfuse {result['lmfuse']}", flush=True)
    digests = tensor_digests(out_l, sample=0 if name == "smoke" else 24)
    lmfuse_names = set(CheckpointReader(out_l).keys())
    if free_bytes(work) > out_bytes + 10 * 1024**3:  # leave room for everyone else on the disk
        result["copy"] = measure(["cp", "-r", str(out_l), str(out_c)], work / f"{name}-copy.log")
        print(f"[{name}] copy {result['copy']}", flush=True)
        result["lmfuse/copy wall"] = round(
            result["lmfuse"]["wall_s"] / max(result["copy"]["wall_s"], 1e-3), 3
        )
    else:
        result["copy"] = f"skipped: less than {out_bytes / 1024**3:.0f} GB + 10 GB free"
    shutil.rmtree(out_c, ignore_errors=True)
    if not keep:
        shutil.rmtree(out_l, ignore_errors=True)
    if mergekit is not None:
        recipe = work / f"{name}-mergekit.yaml"
        recipe.write_text(mergekit_recipe(src, n, drop))
        result["mergekit"] = measure([str(mergekit), str(recipe), str(out_m)], work / f"{name}-mergekit.log")
        print(f"[{name}] mergekit {result['mergekit']}", flush=True)
        if result["mergekit"]["exit"] == 0:
            result["check"] = compare(digests, lmfuse_names, out_m)
            print(f"[{name}] check {result['check']}", flush=True)
        result["lmfuse/mergekit wall"] = round(result["lmfuse"]["wall_s"] / result["mergekit"]["wall_s"], 3)
        result["lmfuse/mergekit peak RSS"] = round(
            result["lmfuse"]["peak_rss_mb"] / result["mergekit"]["peak_rss_mb"], 3
        )
    if not keep:
        shutil.rmtree(out_m, ignore_errors=True)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="one tiny case, seconds")
    p.add_argument("--cases", default="1b,7b", help="comma-separated: smoke, 1b, 7b")
    p.add_argument("--workdir", default="/tmp/lmfuse-bench-graft")
    p.add_argument("--mergekit", default=str(DEFAULT_MERGEKIT), help="mergekit-yaml executable ('' to skip)")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    p.add_argument("--keep", action="store_true", help="keep the outputs (sources are always kept)")
    given = sys.argv[1:] if argv is None else argv
    args = p.parse_args(given)
    from lmfuse.core.atomic import atomic_write_text, check_output_option

    check_output_option(args.json, args.overwrite, p.error)  # before the work, not after
    cases = ["smoke"] if args.smoke else args.cases.split(",")
    mergekit = Path(args.mergekit) if args.mergekit and Path(args.mergekit).exists() else None
    results = {
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, no GPU used",
        "command": " ".join([Path(sys.executable).name, SCRIPT, *given]),
        "mergekit": str(mergekit) if mergekit else "not available",
        "cases": [run_case(c, Path(args.workdir), mergekit, args.keep) for c in cases],
    }
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        atomic_write_text(args.json, text + "\n")  # never a half-written result file
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
