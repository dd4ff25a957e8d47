"""Building an MoE from dense checkpoints: ``lmfuse moe build`` vs ``mergekit-moe``, side by side.

Writes a base and ``--experts`` random dense Llama checkpoints (bf16, 2 GB shards) of about 1B parameters
each (``--smoke``: tiny), then builds a Mixtral from them with each tool in its own child process and
records wall time and peak RSS (``/usr/bin/time -v``). ``--gate random`` (default) measures the pure
build; ``--gate hidden`` adds one forward of the base over the prompts in both. Finally checks that the two outputs hold
the same expert weights.

    python benchmarks/moe/build_vs_mergekit.py --smoke
    python benchmarks/moe/build_vs_mergekit.py --mergekit /work/bench-venvs/mergekit-moe/bin/mergekit-moe
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from lmfuse.core.checkpoint import CheckpointReader, ShardedWriter
from lmfuse.testing import char_tokenizer

ONE_B = dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
             num_key_value_heads=8, vocab_size=32000)  # fmt: skip
SMOKE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, vocab_size=100)  # fmt: skip


def write_dense(directory: Path, shape: dict, seed: int) -> int:
    """A random bf16 Llama checkpoint; returns its parameter count."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(**shape, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    config.dtype = torch.bfloat16
    with torch.device("meta"):
        names = [(n, tuple(p.shape)) for n, p in AutoModelForCausalLM.from_config(config).named_parameters()]
    directory.mkdir(parents=True)
    gen = torch.Generator().manual_seed(seed)
    writer = ShardedWriter(directory, max_shard_bytes=2 * 1024**3)
    for name, shape_ in names:
        writer.add(name, (torch.randn(shape_, generator=gen) * 0.02).to(torch.bfloat16))
    writer.close()
    config.save_pretrained(directory)
    char_tokenizer().save_pretrained(directory)
    return sum(torch.Size(s).numel() for _, s in names)


def timed(cmd: list[str]) -> dict:
    """Run ``cmd`` under ``/usr/bin/time -v``: wall seconds and peak RSS (GB)."""
    start = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode:
        raise RuntimeError(
            f"{cmd[0]} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
        )
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    return dict(seconds=round(wall, 1), peak_rss_gb=round(rss_kb / 1024**2, 2), stdout=proc.stdout[-600:])


def recipes(root: Path, n: int, gate: str) -> tuple[Path, Path]:
    """Both tools' recipes; ``gate`` is ``random`` or ``hidden`` (one prompt per expert)."""
    experts = [root / f"expert{i}" for i in range(n)]
    ours = [f"base: {root / 'base'}", f"router_init: {gate}", "num_experts_per_tok: 2", "experts:"]
    ours += [f"  - source: {e}\n    positive_prompts: ['Q: {i}+{i}= A:']" for i, e in enumerate(experts)]
    theirs = [f"base_model: {root / 'base'}", f"gate_mode: {gate}", "dtype: bfloat16", "experts:"]
    theirs += [
        f"  - source_model: {e}\n    positive_prompts: ['Q: {i}+{i}= A:']" for i, e in enumerate(experts)
    ]
    (root / "lmfuse.yaml").write_text("\n".join(ours) + "\n")
    (root / "mergekit.yaml").write_text("\n".join(theirs) + "\n")
    return root / "lmfuse.yaml", root / "mergekit.yaml"


def same_experts(ours: Path, theirs: Path, layers: int, n: int) -> bool:
    """Our per-expert ``w1/w3/w2`` (the layout transformers saves) vs mergekit's stacked v5 tensors."""
    ra, rb = CheckpointReader(ours), CheckpointReader(theirs)
    for layer in (0, layers - 1):
        gate_up = rb.get(f"model.layers.{layer}.mlp.experts.gate_up_proj")
        down = rb.get(f"model.layers.{layer}.mlp.experts.down_proj")
        for e in range(n):
            prefix = f"model.layers.{layer}.block_sparse_moe.experts.{e}"
            w1, w3, w2 = (ra.get(f"{prefix}.{w}.weight") for w in ("w1", "w3", "w2"))
            if not (torch.equal(torch.cat([w1, w3]), gate_up[e]) and torch.equal(w2, down[e])):
                return False
    return True


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--experts", type=int, default=4)
    parser.add_argument("--mergekit", help="path of the mergekit-moe executable (its own venv)")
    parser.add_argument(
        "--gate", choices=["random", "hidden"], default="random", help="router initialisation"
    )
    parser.add_argument("--workdir", help="where to write checkpoints (default: a temporary directory)")
    args = parser.parse_args(argv)
    shape = SMOKE if args.smoke else ONE_B
    root = Path(args.workdir or tempfile.mkdtemp(prefix="moe-build-bench-"))
    try:
        params = write_dense(root / "base", shape, seed=0)
        for i in range(args.experts):
            write_dense(root / f"expert{i}", shape, seed=i + 1)
        ours, theirs = recipes(root, args.experts, args.gate)
        report = dict(date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), dense_params=params,
                      experts=args.experts, gate=args.gate)  # fmt: skip
        report["lmfuse"] = timed(
            [sys.executable, "-m", "lmfuse", "moe", "build", str(ours), str(root / "out-lmfuse")]
        )
        if args.mergekit:
            report["mergekit"] = timed([args.mergekit, str(theirs), str(root / "out-mergekit"), "--quiet"])
            report["same_expert_weights"] = same_experts(
                root / "out-lmfuse", root / "out-mergekit", shape["num_hidden_layers"], args.experts
            )
        print(json.dumps(report, indent=2))
        return report
    finally:
        if not args.workdir:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
