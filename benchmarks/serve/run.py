"""Load test of ``lmfuse serve`` on loopback (bounded in count and time).

Part 1, ``vote``: three scripted OpenAI-compatible members with a fixed latency (50 ms by default),
each its own process (``lean.py``: a raw asyncio HTTP server, so that the members are not what is
measured), and ``lmfuse serve`` with a ``vote`` model over them (quorum 2) in another process. First
``--clients`` clients hit one member directly (the members' own latency under this load), then the same
clients hit the vote model for ``--seconds``; at ``--kill-at`` of that time one member process is killed
(SIGKILL). The clients are ``lean.py``'s load generator (one keep-alive raw HTTP/1.1 connection each)
in this process. Every request is counted as a fused answer, a clear error (an OpenAI-shaped error
body) or lost (anything else: must be 0). Overhead is reported three ways: p50/p99 minus the nominal
member latency, minus the members' measured latency under the same load (side by side), and per
request: end-to-end minus the slowest member call that request made (from the response's ``lmfuse``
field). CPU per request of each process (``/proc/PID/stat``) says where the machine's time went.

Two baselines run side by side with the same harness, before the vote phase: the same clients hit
member 0 alone, and the **fan-out baseline**: each request makes the three member calls itself, at once,
and ends when all have answered (ideal fusion at zero cost, no lmfuse in between); its p50/p99 minus the
member latency is the harness's own queueing on this machine, and the vote model's p50/p99 minus the
fan-out's is lmfuse's overhead over it. ``--sweep 8,16,32,64`` (before everything else, all members up):
at each client count the fan-out baseline and the vote model for ``--sweep-seconds`` each, with CPU per
request of the generator, the members and the lmfuse server: where the machine saturates.

Part 2, ``mixed``: ``lmfuse serve`` over ``zoo:add``; concurrent greedy and sampled (temperature 50)
``/v1/completions`` requests; every greedy reply must equal the reference greedy text (issue 15 item 4).

    PYTHONPATH=src .venv/bin/python benchmarks/serve/run.py            # ~4.5 min (--workers 2, then 1)
    PYTHONPATH=src .venv/bin/python benchmarks/serve/run.py --smoke    # seconds, run by tests
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lean  # noqa: E402  (the harness next to this file)

ROOT = Path(__file__).resolve().parents[2]
USER = [{"role": "user", "content": "What is 6*7? Say the answer."}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(config: str, tmp: Path, name: str, workers: int = 1) -> tuple[subprocess.Popen, str]:
    """``lmfuse serve --config [--workers N]`` as its own process (not waited for: see ``ready``) and
    its base URL."""
    path = tmp / f"{name}.yaml"
    path.write_text(config)
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "lmfuse", "serve", "--config", str(path), "--port", str(port),
                             "--workers", str(workers)], stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
    return proc, f"http://127.0.0.1:{port}/v1"


def ready(proc: subprocess.Popen, name: str) -> None:
    """Wait for the process's "ready" line."""
    for line in proc.stderr:  # type: ignore[union-attr]
        if "ready at" in line:
            return
    raise RuntimeError(f"{name} did not start (exit {proc.wait()})")


def start(config: str, tmp: Path, name: str) -> tuple[subprocess.Popen, str]:
    proc, url = spawn(config, tmp, name)
    ready(proc, name)
    return proc, url


def spawn_member(reply: str, latency: float) -> tuple[subprocess.Popen, str]:
    """A lean scripted member (``lean.py member``) as its own process and its base URL."""
    port = free_port()
    cmd = [sys.executable, str(Path(__file__).resolve().parent / "lean.py"), "member", "--port", str(port),
           "--latency", str(latency), "--reply", reply]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True), f"http://127.0.0.1:{port}/v1"


def member_ready(proc: subprocess.Popen, name: str) -> None:
    line = proc.stdout.readline() if proc.stdout else ""
    if "ready at" not in line:
        raise RuntimeError(f"{name} did not start (exit {proc.wait()})")


def vote_config(urls: list[str]) -> str:
    backends = "".join(f"  m{i}: {{kind: openai, base_url: {u}, model: m, max_retries: 0, timeout: 5, "
                       f"max_concurrency: 1024}}\n" for i, u in enumerate(urls))  # fmt: skip
    return (
        f"backends:\n{backends}models:\n  vote3: {{method: vote, members: [m0, m1, m2], similarity: answer,"
        " quorum: 2, timeout: 5}\nserver: {limits: {max_concurrency: 1024, max_queue: 4096}}\n"
    )


def drive(url: str, model: str, clients: int, seconds: float, on_time=None) -> list[dict]:
    """``clients`` concurrent keep-alive clients for ``seconds`` (``lean.drive``), one record per request."""
    return lean.run(lean.drive(url, model, clients, seconds, USER, on_time))  # type: ignore[return-value]


def fanout(urls: list[str], clients: int, seconds: float) -> list[dict]:
    """The no-lmfuse baseline: each request calls every member itself, at once (``lean.drive_fanout``)."""
    return lean.run(lean.drive_fanout(urls, "m", clients, seconds, USER))  # type: ignore[return-value]


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, int(round(q * (len(v) - 1))))]


def summarize(records: list[dict], seconds: float) -> dict:
    lat = [r["latency"] for r in records if r["kind"] == "answer"]
    per = [r["latency"] - r["slowest_member"] for r in records if r.get("slowest_member") is not None]
    kinds = {k: sum(r["kind"] == k for r in records) for k in ("answer", "error", "lost")}
    ms = lambda x: None if x is None else round(1000 * x, 2)  # noqa: E731
    return {"requests": len(records), **kinds, "throughput_rps": round(kinds["answer"] / seconds, 1),
            "p50_ms": ms(pct(lat, 0.5)), "p99_ms": ms(pct(lat, 0.99)),
            "own_overhead_p50_ms": ms(pct(per, 0.5)), "own_overhead_p99_ms": ms(pct(per, 0.99)),
            "errors_by_status": _count(r.get("status") for r in records if r["kind"] == "error")}  # fmt: skip


def _count(items) -> dict:
    out: dict = {}
    for i in items:
        out[str(i)] = out.get(str(i), 0) + 1
    return out


def stop_server(proc: subprocess.Popen) -> None:
    """SIGTERM (with ``--workers N`` the parent stops its workers), then SIGKILL if it lingers."""
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def vote_part(args: argparse.Namespace, tmp: Path, workers: int = 1) -> dict:
    replies = ["The answer is 42.", "I get 42 as the answer.", "The answer is 41."]
    members = [spawn_member(r, args.latency) for r in replies]
    fused, url = spawn(vote_config([u for _, u in members]), tmp, "vote", workers)
    procs = [p for p, _ in members] + [fused]
    try:
        for i, (p, _) in enumerate(members):  # all four start at once
            member_ready(p, f"member {i}")
        ready(fused, "lmfuse serve")
        for u, model in [*((u, "m") for _, u in members), (url, "vote3")]:  # warm up (imports, connections)
            drive(u, model, 4, args.warmup)
        sweep = sweep_part(args, [u for _, u in members], url, procs) if args.sweep else None
        cpu0 = _cpu(procs)
        base = drive(members[0][1], "m", args.clients, args.baseline_seconds)
        cpu_fan = _cpu(procs)
        fan = fanout([u for _, u in members], args.clients, args.baseline_seconds)
        cpu_base = _cpu(procs)
        killed_at: list[float] = []

        async def killer() -> None:
            await asyncio.sleep(args.seconds * args.kill_at)
            killed_at.append(time.perf_counter())
            cpu_kill.update(_cpu(procs))
            members[2][0].send_signal(signal.SIGKILL)

        cpu_kill: dict = {}
        per_process0 = lean.tree_cpu(fused.pid)
        t0 = time.perf_counter()
        recs = drive(url, "vote3", args.clients, args.seconds, killer)
        wall = time.perf_counter() - t0
        cpu_end = _cpu(procs[:2] + procs[3:])
        per_process = lean.tree_cpu(fused.pid)
    finally:
        stop_server(fused)
        for p in procs[:3]:
            p.kill()
            p.wait()
    k = killed_at[0]
    before = [r for r in recs if r["t"] + r.get("latency", 0) < k]
    after = [r for r in recs if r["t"] > k + args.settle]  # the steady state without the killed member
    direct = summarize(base, args.baseline_seconds)
    out = {"workers": workers, "member_latency_ms": 1000 * args.latency, "clients": args.clients, "seconds": args.seconds,
           "load_average": os.getloadavg(),
           "direct_member": direct, "fanout_baseline": summarize(fan, args.baseline_seconds),
           "vote": summarize(recs, wall),
           "vote_before_kill": summarize(before, k - t0), "vote_after_kill": summarize(after, t0 + wall - k - args.settle),
           "after_kill_answers_with_a_failed_member": sum(r.get("failed_members", 0) > 0 for r in after)}  # fmt: skip
    started_before_kill = [r for r in recs if r["t"] < k]
    out["cpu_ms_per_request"] = _cpu_per_request(procs, cpu0, cpu_base, cpu_kill, cpu_end, len(base),
                                                 len(started_before_kill), len(recs))  # fmt: skip
    out["cpu_ms_per_request"]["fanout_baseline"] = _cpu_ms(procs, cpu_fan, cpu_base, len(fan))
    # the vote phase's CPU seconds of each lmfuse process (the parent first): how the workers shared it
    out["vote_cpu_seconds_by_server_process"] = [
        round(c - per_process0.get(p, 0.0), 2) for p, c in per_process.items()
    ]
    v = out["vote_before_kill"]
    out["overhead_vs_nominal_ms"] = _minus(v, None, args.latency)
    out["overhead_vs_direct_member_ms"] = _minus(v, direct)
    out["overhead_vs_fanout_baseline_ms"] = _minus(v, out["fanout_baseline"])
    out["fanout_queueing_ms"] = _minus(out["fanout_baseline"], None, args.latency)
    if sweep is not None:
        out["sweep"] = sweep
    return out


def _minus(a: dict, b: dict | None, nominal: float = 0.0) -> dict | None:
    """p50 and p99 of summary ``a`` minus those of ``b`` (or minus ``nominal`` seconds)."""
    if a["p50_ms"] is None or (b is not None and b["p50_ms"] is None):
        return None
    sub = {q: b[f"{q}_ms"] if b is not None else 1000 * nominal for q in ("p50", "p99")}
    return {q: round(a[f"{q}_ms"] - sub[q], 2) for q in ("p50", "p99")}


def sweep_part(args: argparse.Namespace, urls: list[str], url: str, procs: list) -> list[dict]:
    """At each client count, the no-lmfuse fan-out baseline and the vote model, one after the other
    for ``--sweep-seconds`` each (all members up): where the machine saturates, and who spends the CPU."""
    rows = []
    for clients in args.sweep:
        row: dict = {"clients": clients}
        for name, go in (("fanout_baseline", lambda c=clients: fanout(urls, c, args.sweep_seconds)),
                         ("vote", lambda c=clients: drive(url, "vote3", c, args.sweep_seconds))):  # fmt: skip
            before = _cpu(procs)
            recs = go()
            row[name] = {
                **summarize(recs, args.sweep_seconds),
                "cpu_ms_per_request": _cpu_ms(procs, before, _cpu(procs), len(recs)),
            }
        row["overhead_vs_fanout_ms"] = _minus(row["vote"], row["fanout_baseline"])
        row["vote_overhead_vs_nominal_ms"] = _minus(row["vote"], None, args.latency)
        rows.append(row)
    return rows


def _cpu_ms(procs: list, a: dict, b: dict, n: int) -> dict | None:
    """CPU ms per request between snapshots ``a`` and ``b``: generator, members (summed), lmfuse server."""
    if not n:
        return None
    ms = lambda pid: round(1000 * (b[pid] - a[pid]) / n, 3)  # noqa: E731
    return {"generator": ms(0), "members": round(sum(ms(p.pid) for p in procs[:3]), 3),
            "lmfuse_server": ms(procs[3].pid)}  # fmt: skip


def _cpu(procs: list[subprocess.Popen]) -> dict:
    """CPU seconds so far of each process with its children (by pid; ``--workers N``: the workers) and
    of this one (the load generator, key 0)."""
    return {0: time.process_time(), **{p.pid: sum(lean.tree_cpu(p.pid).values()) for p in procs}}


def _cpu_per_request(procs, cpu0, cpu_base, cpu_kill, cpu_end, n_base, n_before, n_all) -> dict:
    """CPU ms per request of each process: the direct-member phase, and the vote phase (the lmfuse
    server and the generator over the whole run, the members until the kill)."""
    ms = lambda a, b, pid, n: round(1000 * (b[pid] - a[pid]) / n, 3) if n else None  # noqa: E731
    members, server = procs[:3], procs[3]
    return {
        "direct": {"member0": ms(cpu0, cpu_base, members[0].pid, n_base), "generator": ms(cpu0, cpu_base, 0, n_base)},
        "vote": {"lmfuse_server": ms(cpu_base, cpu_end, server.pid, n_all),
                 "lmfuse_server_before_kill": ms(cpu_base, cpu_kill, server.pid, n_before),
                 "generator": ms(cpu_base, cpu_end, 0, n_all),
                 "members_per_fused_request": round(sum(ms(cpu_base, cpu_kill, m.pid, n_before) for m in members), 3)},
    }  # fmt: skip


def mixed_part(args: argparse.Namespace, tmp: Path) -> dict:
    """Greedy and temperature-50 requests sent together: every greedy reply must be the greedy text."""
    cfg = ("backends:\n  add: {kind: hf, model: 'zoo:add'}\n"
           "models:\n  add: {method: single, backend: add, max_model_len: 1024}\n")  # fmt: skip
    proc, url = start(cfg, tmp, "mixed")
    prompts = [f"Q: {a}+{b}= A:" for a, b in ((37, 48), (12, 7), (250, 250), (9, 91))]
    try:
        with httpx.Client(base_url=url, timeout=60) as c:
            ref = {p: c.post("/completions", json={"model": "add", "prompt": p, "max_tokens": 8,
                                                    "temperature": 0}).json()["choices"][0]["text"]
                   for p in prompts}  # fmt: skip

        async def go() -> list[tuple[str, bool, str]]:
            async with httpx.AsyncClient(base_url=url, timeout=120) as c:

                async def one(i: int) -> tuple[str, bool, str]:
                    p, hot = prompts[i % len(prompts)], i % 4 == 3
                    body = {"model": "add", "prompt": p, "max_tokens": 8, "temperature": 50.0 if hot else 0}
                    r = await c.post("/completions", json=body)
                    return p, hot, r.json()["choices"][0]["text"]

                return await asyncio.gather(*(one(i) for i in range(args.mixed_requests)))

        t0 = time.perf_counter()
        outs = asyncio.run(go())
        wall = time.perf_counter() - t0
    finally:
        stop_server(proc)
    greedy = [(p, t) for p, hot, t in outs if not hot]
    wrong = sum(t != ref[p] for p, t in greedy)
    hot_differ = sum(t != ref[p] for p, hot, t in outs if hot)
    return {"requests": len(outs), "greedy": len(greedy), "greedy_wrong": wrong,
            "sampled": len(outs) - len(greedy), "sampled_not_greedy": hot_differ, "seconds": round(wall, 2)}  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="CI size: 8 clients, 4 s, 24 mixed requests")
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--baseline-seconds", type=float, default=10.0)
    ap.add_argument("--latency", type=float, default=0.05, help="member latency in seconds (default 0.05)")
    ap.add_argument(
        "--kill-at", type=float, default=0.6, help="fraction of --seconds when a member is killed"
    )
    ap.add_argument("--mixed-requests", type=int, default=128)
    ap.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up traffic per server")
    ap.add_argument("--settle", type=float, default=1.0, help="after the kill, seconds before 'after kill'")
    ap.add_argument("--sweep", default="8,16,32,64",
                    help="client counts of the sweep (fan-out baseline and vote at each), '' for none")  # fmt: skip
    ap.add_argument("--sweep-seconds", type=float, default=4.0)
    ap.add_argument("--parts", default="vote,mixed")
    ap.add_argument("--workers", default=None,
                    help="lmfuse serve --workers for the vote part; several ('2,1', the default; --smoke: "
                    "1): the vote part once per count, one after the other, each with its own members and "
                    "baselines")  # fmt: skip
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    args = ap.parse_args(argv)
    from lmfuse.core.atomic import atomic_write_text, check_output_option

    check_output_option(args.json, args.overwrite, ap.error)  # before the work, not after
    if args.smoke:
        args.clients, args.seconds, args.baseline_seconds, args.mixed_requests = 8, 4.0, 1.0, 24
        args.kill_at, args.warmup, args.settle = 0.25, 0.3, 0.5
        args.sweep, args.sweep_seconds = "2,8", 0.5
    args.sweep = [int(c) for c in args.sweep.split(",") if c.strip()]
    if args.workers is None:
        args.workers = "1" if args.smoke else "2,1"
    args.workers = [int(c) for c in args.workers.split(",") if c.strip()]
    report: dict = {"command": " ".join(["benchmarks/serve/run.py", *(argv or sys.argv[1:])])}
    with tempfile.TemporaryDirectory() as tmp:
        if "vote" in args.parts:  # the first count is "vote", the others "vote_<i>_workers<N>"
            for i, n in enumerate(args.workers):
                report["vote" if i == 0 else f"vote_{i}_workers{n}"] = vote_part(args, Path(tmp), n)
        if "mixed" in args.parts:  # after the timed part: loading a model would disturb it
            report["mixed"] = mixed_part(args, Path(tmp))
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        atomic_write_text(args.json, text + "\n")  # never a half-written result file
    return report


if __name__ == "__main__":
    main()
