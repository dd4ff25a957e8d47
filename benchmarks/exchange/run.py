"""Benchmark of lmfuse.exchange, two parts, each measured side by side in one run.

1. Waiting: EoT with 5 agents through the ``openai`` backend against ``lmfuse serve`` (in a thread on
   127.0.0.1) with a fixed artificial latency per call. Reported: wall time per round / one call's
   latency, for lmfuse (calls of a round concurrent) and for the reference code's way (one call after
   another, ``max_concurrency: 1``). Target: <= 1.3 with 5 agents.
2. Calls saved by the early exit: EoT over the zoo members (in-process ``hf``) on the zoo's held-out
   questions, with and without the early exit; calls, accuracy, share of questions ended at round 0.

    python benchmarks/exchange/run.py            # full: latency 0.5 and 1 s, 3 rounds; 50 questions/op
    python benchmarks/exchange/run.py --smoke    # seconds: latency 0.3 s, 2 rounds; 3 questions/op

The sequential baseline is timed on one question (it is 5 calls per round by construction).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import time
from datetime import UTC, datetime

from lmfuse import zoo
from lmfuse.backends import BackendConfig
from lmfuse.backends.hf import HFBackend
from lmfuse.exchange.config import AgentConfig, EoTConfig
from lmfuse.exchange.eot import EoT
from lmfuse.exchange.zoo_agents import agent_names, solve_all, zoo_eot
from lmfuse.serve.app import create_app
from lmfuse.serve.faults import Faults
from lmfuse.serve.server import ServerThread

N_AGENTS = 5


def waiting(
    members: dict, agents_of: list[str], latency: float, questions: list, rounds: int, concurrency: int
) -> dict:
    """Median over questions of (wall time per round) / latency, the agents on one server."""
    with ServerThread(create_app(members, Faults(latency=latency))) as server:
        backend = BackendConfig(kind="openai", base_url=server.base_url, max_concurrency=concurrency)
        agents = [
            # short replies: the in-process server computes its calls one after another, so full
            # scratchpads (zoo.MAX_NEW_TOKENS) would measure its compute, not the waiting per round
            AgentConfig(name=a, backend="srv", model=m, prompt_format="qa_lines", max_tokens=6)
            for a, m in zip(agent_names(agents_of), agents_of, strict=True)
        ]
        config = EoTConfig(
            backends={"srv": backend}, agents=agents, topology="memory", max_rounds=rounds,
            early_exit=False, stop_on_unanimity=False,
        )  # fmt: skip
        ratios, calls = [], 0
        # first calls pay for start-up, not for waiting: one round (a first call to every agent) warms it
        EoT(dataclasses.replace(config, max_rounds=1)).run(questions[0].prompt, "warm-up")
        for q in questions:
            eot = EoT(config)
            start = time.perf_counter()
            result = eot.run(q.prompt, q.id)
            ratios.append((time.perf_counter() - start) / rounds / latency)
            calls += result.calls
            assert not result.failures, result.failures
    return {"per_round_over_latency": statistics.median(ratios), "all": ratios, "calls": calls}


def early_exit(agents_of: list[str], load, questions: list, rounds: int) -> dict:
    out = {}
    for flag in (True, False):
        eot = zoo_eot(agents_of, load, max_rounds=rounds, early_exit=flag)
        start = time.perf_counter()
        results = solve_all(eot, [q.prompt for q in questions], [q.id for q in questions])
        seconds = time.perf_counter() - start
        scored = zoo.score(questions, [r.answer or "" for r in results])
        out["on" if flag else "off"] = {
            "calls": sum(r.calls for r in results),
            "accuracy": scored.accuracy,
            "early_exit_share": sum(r.stop == "early_exit" for r in results) / len(results),
            "seconds": seconds,
        }
    out["calls_saved"] = 1 - out["on"]["calls"] / out["off"]["calls"]
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny and fast (used by the tests)")
    p.add_argument("--json", help="also write the numbers to this file")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    args = p.parse_args(argv)
    from lmfuse.core.atomic import atomic_write_text, check_output_option

    check_output_option(args.json, args.overwrite, p.error)  # before the work, not after
    latencies, nq, rounds, per_op = ((0.3,), 1, 2, 3) if args.smoke else ((0.5, 1.0), 3, 3, 50)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    present = zoo.names()
    agents_of = [present[i % len(present)] for i in range(N_AGENTS)]  # the 5 zoo members, one each
    loaded = {m: zoo.load(m) for m in present}
    members = {m: HFBackend(*loaded[m], name=m) for m in present}
    questions = zoo.eval_set(per_op)
    lat_q = questions[:: max(1, len(questions) // nq)][:nq]
    report = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, no GPU",
        "mode": "smoke" if args.smoke else "full",
        "waiting": [
            {
                "latency_s": lat,
                "concurrent": waiting(members, agents_of, lat, lat_q, rounds, concurrency=16),
                "sequential": waiting(members, agents_of, lat, lat_q[:1], rounds, concurrency=1),
            }
            for lat in latencies
        ],
        "agents": agent_names(agents_of),
        "early_exit": early_exit(agents_of, loaded.__getitem__, questions, rounds),
    }
    print(
        f"agents {', '.join(report['agents'])} through lmfuse serve, {rounds} rounds, {len(lat_q)} questions"
    )
    for w in report["waiting"]:
        c, s = w["concurrent"]["per_round_over_latency"], w["sequential"]["per_round_over_latency"]
        print(f"  latency {w['latency_s']:.1f} s: wall per round / latency: lmfuse (concurrent) {c:.2f}, "
              f"one call after another {s:.2f}  (target <= 1.3)")  # fmt: skip
    e = report["early_exit"]
    print(f"early exit on {len(questions)} zoo questions, {N_AGENTS} agents, at most {rounds} rounds:")
    for k in ("on", "off"):
        r = e[k]
        print(f"  early exit {k:>3}: calls {r['calls']:>5}  accuracy {r['accuracy']:.3f}  "
              f"ended at round 0 {r['early_exit_share']:.0%}")  # fmt: skip
    print(f"  calls saved by the early exit: {e['calls_saved']:.1%}")
    if args.json:
        atomic_write_text(args.json, json.dumps(report, indent=2) + "\n")  # never a half-written result file


if __name__ == "__main__":
    main()
