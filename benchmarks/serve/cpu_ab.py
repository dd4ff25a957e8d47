"""The lmfuse server's CPU per fused request, two (or more) source trees side by side in one run.

One ``lmfuse serve`` process per source tree (``PYTHONPATH=TREE``), all over the same three lean scripted
members (``lean.py``, 50 ms); the trees take turns (order reversed every round, so the shared machine's
load hits them alike) driving ``--clients`` keep-alive clients at the ``vote3`` model for ``--seconds``;
CPU per request of each server from ``/proc/PID/stat``; median over ``--rounds``. ``--profile OUT``: one
more turn of the first tree under ``py-spy record --format raw`` (py-spy on PATH or ``--py-spy``).

    mkdir -p /tmp/before && git archive HEAD~1 src | tar -x -C /tmp/before   # the tree to compare with
    PYTHONPATH=src .venv/bin/python benchmarks/serve/cpu_ab.py /tmp/before/src src --rounds 6
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lean  # noqa: E402
import run as bench  # noqa: E402

REPLIES = ["The answer is 42.", "I get 42 as the answer.", "The answer is 41."]


def _server(tree: str, config: Path) -> tuple[subprocess.Popen, str]:
    port = bench.free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(tree).resolve()), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "lmfuse", "serve", "--config", str(config), "--port", str(port)]
    return subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env), f"http://127.0.0.1:{port}/v1"


def _turn(proc: subprocess.Popen, url: str, clients: int, seconds: float) -> tuple[float, dict]:
    """CPU ms per request of the server ``proc`` over one turn, and the turn's latency summary."""
    before = lean.cpu_seconds(proc.pid)
    recs = bench.drive(url, "vote3", clients, seconds)
    return 1000 * (lean.cpu_seconds(proc.pid) - before) / max(1, len(recs)), bench.summarize(recs, seconds)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("trees", nargs="+", help="source trees (directories holding the lmfuse package)")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--profile", help="py-spy raw output of one more turn of the first tree")
    ap.add_argument("--py-spy", default=shutil.which("py-spy") or "py-spy")
    args = ap.parse_args(argv)
    members = [bench.spawn_member(r, 0.05) for r in REPLIES]
    servers: list[tuple[str, subprocess.Popen, str]] = []
    out: dict = {"clients": args.clients, "seconds": args.seconds, "trees": {}}
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "vote.yaml"
        config.write_text(bench.vote_config([u for _, u in members]))
        try:
            servers = [(t, *_server(t, config)) for t in args.trees]
            for i, (p, _) in enumerate(members):
                bench.member_ready(p, f"member {i}")
            for tree, proc, url in servers:
                bench.ready(proc, tree)
                bench.drive(url, "vote3", 4, 1.0)  # warm up
            cpu: dict[str, list[float]] = {t: [] for t, *_ in servers}
            lat: dict[str, list[dict]] = {t: [] for t, *_ in servers}
            for r in range(args.rounds):
                for tree, proc, url in servers if r % 2 == 0 else servers[::-1]:
                    ms, summary = _turn(proc, url, args.clients, args.seconds)
                    cpu[tree].append(round(ms, 3))
                    lat[tree].append(summary)
            if args.profile:
                _, proc, url = servers[0]
                spy = subprocess.Popen([args.py_spy, "record", "-p", str(proc.pid), "-r", "200", "-f", "raw",
                                        "-o", args.profile, "-d", str(int(args.seconds) + 1)])  # fmt: skip
                _turn(proc, url, args.clients, args.seconds)
                spy.wait()
        finally:
            for p in [s[1] for s in servers] + [p for p, _ in members]:
                p.kill()
                p.wait()
    for tree in cpu:
        out["trees"][tree] = {
            "cpu_ms_per_request_median": round(statistics.median(cpu[tree]), 3), "rounds": cpu[tree],
            "p50_ms": [s["p50_ms"] for s in lat[tree]], "lost": sum(s["lost"] for s in lat[tree]),
        }  # fmt: skip
        print(f"{tree}: {out['trees'][tree]['cpu_ms_per_request_median']} ms CPU per fused request "
              f"(rounds {cpu[tree]}), lost {out['trees'][tree]['lost']}")  # fmt: skip
    out["load_average"] = os.getloadavg()
    return out


if __name__ == "__main__":
    main()
