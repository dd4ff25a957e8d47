"""Ensembles at serving scale, side by side in one run:

1. speculative vs plain local ensemble of zoo members (2 and 4 members sharing a tokenizer, and 2
   byte-aligned members with different tokenizers; batch 1 and 8): throughput ratio (target >= 1.5x at
   batch 1) with the greedy tokens asserted identical, and the mean accepted length;
2. remote members over ``lmfuse serve`` (a real HTTP server on 127.0.0.1) vs the same members local,
   plain and speculative: HTTP calls per generated token (target <= 0.5 with speculation), wall time
   per generated token, and the client's overhead per call over the time the server reports;
3. what top-K truncation changes: remote ensembles with K = 1, 2, 5, 20 log-probs per call vs the
   local ensemble (shared tokenizer base+add, byte-aligned base+generalist): share of prompts with the
   same greedy text, and the mean |difference| of the committed tokens' combined log-probs.

Absolute times on a shared machine are noise; ratios come from runs interleaved in one process.

    python benchmarks/ensemble/serving.py            # full (a few minutes on 2 cores)
    python benchmarks/ensemble/serving.py --smoke    # seconds; run by the tests
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from lmfuse import zoo
from lmfuse.ensemble import Ensemble
from lmfuse.zoo.questions import eval_set

SETS = {2: ["base", "add"], 4: ["base", "add", "sub", "mul"], "bytes": ["base", "generalist"]}
"""Shared-tokenizer sets by size; ``bytes``: two members with different tokenizers (byte-aligned)."""
FULL_K = 5000
"""Log-probs per call above every zoo vocabulary: remote distributions are exact."""


def _timed(fn) -> tuple[float, float]:
    """Wall and CPU seconds (this process: with 1 thread, what other jobs on the machine change least)."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def speculative(
    prompts: list[str], n_members, batch: int, ks: list[int], new: int, repeats: int
) -> list[dict]:
    """Plain vs ``speculate=k`` for each k on the same members and prompts, runs interleaved
    (``n_members``: a key of ``SETS``); one row per k."""
    members = [zoo.load(n) for n in SETS[n_members]]
    plain = Ensemble(members)
    specs = {k: Ensemble(members, speculate=k) for k in ks}
    assert plain.shared_vocab == (n_members != "bytes")

    def run(ens: Ensemble) -> list:
        return ens.generate(prompts, max_new_tokens=new, batch_size=batch)

    want = run(plain)
    accepted = {}
    for k, spec in specs.items():
        assert run(spec) == want, f"speculative (k={k}) greedy tokens differ from the plain ensemble's"
        accepted[k] = spec.stats.mean_accepted
    t_plain, t_spec = [], {k: [] for k in ks}
    for _ in range(repeats):  # interleaved: load changes hit all alike
        t_plain.append(_timed(lambda: run(plain)))
        for k, spec in specs.items():
            t_spec[k].append(_timed(lambda s=spec: run(s)))
    tokens = plain.stats.row_steps

    def median(times: list[tuple[float, float]], i: int) -> float:
        return statistics.median(t[i] for t in times)

    return [
        {
            "members": n_members if n_members == "bytes" else len(members),
            "names": "+".join(SETS[n_members]),
            "byte_aligned": not plain.shared_vocab,
            "batch": batch,
            "k": k,
            "tokens": tokens,
            "plain_tok_s": tokens / median(t_plain, 0),
            "spec_tok_s": tokens / median(t_spec[k], 0),
            "ratio": median(t_plain, 0) / median(t_spec[k], 0),
            "cpu_ratio": median(t_plain, 1) / median(t_spec[k], 1),
            "mean_accepted": accepted[k],
            "identical": True,
        }
        for k in ks
    ]


def remote(url: str, prompts: list[str], batch: int, ks: list[int], new: int, full_k: int) -> list[dict]:
    """The 2-member zoo ensemble with members served by ``lmfuse serve`` vs local."""
    names = SETS[2]
    rows = []
    local = Ensemble([zoo.load(n) for n in names])
    start = time.perf_counter()
    want = local.generate(prompts, max_new_tokens=new, batch_size=batch)
    local_s = time.perf_counter() - start
    for spec in (0, *ks):
        specs = [{"base_url": url, "model": n, "tokenizer": f"zoo:{n}", "logprobs": full_k} for n in names]
        ens = Ensemble(specs, speculate=spec)
        ens.generate(prompts[:1], max_new_tokens=2)  # warm the connections
        for m in ens.members:
            m.calls, m.seconds, m.server_seconds = 0, 0.0, 0.0
        start = time.perf_counter()
        got = ens.generate(prompts, max_new_tokens=new, batch_size=batch)
        wall = time.perf_counter() - start
        assert got == want, "remote ensemble differs from the local one"
        tokens = ens.stats.row_steps
        calls = sum(m.calls for m in ens.members)
        client = sum(m.seconds for m in ens.members)
        server = sum(m.server_seconds for m in ens.members)
        rows.append(
            {
                "speculate": spec,
                "batch": batch,
                "tokens": tokens,
                "calls_per_token": calls / tokens,
                "calls_per_token_per_member": calls / tokens / len(names),
                "mean_accepted": ens.stats.mean_accepted,
                "remote_ms_per_token": 1000 * wall / tokens,
                "local_ms_per_token": 1000 * local_s / local.stats.row_steps,
                # None: the server reported no time of its own for these calls
                "overhead_ms_per_call": 1000 * (client - server) / calls if server else None,
                "server_ms_per_call": 1000 * server / calls if server else None,
                "client_ms_per_call": 1000 * client / calls,
                "identical": True,
            }
        )
    return rows


def truncation(url: str, prompts: list[str], new: int, ks: list[int]) -> list[dict]:
    """Remote ensembles with K log-probs per call vs the local ensemble (K >= vocabulary: exact)."""
    rows = []
    for pair in (["base", "add"], ["base", "generalist"]):
        local = Ensemble([zoo.load(n) for n in pair]).complete(prompts, max_new_tokens=new)
        for k in ks:
            specs = [{"base_url": url, "model": n, "tokenizer": f"zoo:{n}", "logprobs": k} for n in pair]
            got = Ensemble(specs).complete(prompts, max_new_tokens=new)
            same = [g.text == w.text for g, w in zip(got, local, strict=True)]
            diffs = [
                abs(a - b)
                for g, w in zip(got, local, strict=True)
                if g.text == w.text
                for a, b in zip(g.token_logprobs, w.token_logprobs, strict=False)
            ]
            rows.append(
                {
                    "members": "+".join(pair),
                    "K": k,
                    "same_text": sum(same) / len(same),
                    "mean_abs_logprob_diff": statistics.mean(diffs) if diffs else None,
                }
            )
    return rows


def _k_list(text: str) -> list[int]:
    try:
        ks = [int(k) for k in text.split(",")]
    except ValueError:
        ks = []
    if not ks or min(ks) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers >= 1, found {text!r}")
    return ks


def _set_list(text: str) -> list:
    sets = [m if m == "bytes" else int(m) if m.isdigit() else m for m in text.split(",")]
    if any(m not in SETS for m in sets):
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of 2, 4, bytes, found {text!r}")
    return sets


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="few prompts, one repeat: seconds")
    ap.add_argument(
        "--k", type=_k_list, default="6,12,24", help="speculate=k values, comma-separated (default 6,12,24)"
    )
    ap.add_argument(
        "--sets",
        type=_set_list,
        default="2,4,bytes",
        help="member sets of the speculative part (default 2,4,bytes)",
    )
    ap.add_argument("--local-only", action="store_true", help="only the speculative vs plain local part")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    args = ap.parse_args(argv)
    from lmfuse.core.atomic import atomic_write_text, check_output_option

    check_output_option(args.json, args.overwrite, ap.error)  # before the work, not after
    torch.set_num_threads(args.threads)
    n_prompts, repeats, new = (4, 1, 8) if args.smoke else (32, 5, zoo.MAX_NEW_TOKENS)
    prompts = [q.prompt for q in eval_set()][:n_prompts]
    results: dict = {"smoke": args.smoke, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    ks, sets = args.k, args.sets
    results["speculative"] = [
        row for m in sets for b in (1, 8) for row in speculative(prompts, m, b, ks, new, repeats)
    ]
    if not args.local_only:
        _remote_parts(results, prompts, ks, new, args.smoke)
    _print(results)
    if args.json:
        atomic_write_text(args.json, json.dumps(results, indent=2))  # never a half-written result file
    return 0


def _remote_parts(results: dict, prompts: list[str], ks: list[int], new: int, smoke: bool) -> None:
    """Remote members over ``lmfuse serve`` vs local, and top-K truncation (into ``results``)."""
    from lmfuse.serve.testing import start_server

    cfg = {
        "server": {"max_logprobs": FULL_K},
        "backends": {n: {"kind": "hf", "model": f"zoo:{n}"} for n in ["base", "add", "generalist"]},
        "models": {n: {"method": "single", "backend": n} for n in ["base", "add", "generalist"]},
    }
    with start_server(cfg) as url:  # one server, one HTTP endpoint per served model
        results["remote"] = [r for b in (1, 8) for r in remote(url, prompts, b, ks, new, FULL_K)]
        top_ks = [FULL_K] if smoke else [1, 2, 5, 20, FULL_K]
        results["truncation"] = truncation(url, prompts, new, top_ks)


def _print(r: dict) -> None:
    print("speculative vs plain local ensemble (zoo members, greedy tokens identical):")
    for s in r["speculative"]:
        aligned = " (byte-aligned)" if s["byte_aligned"] else ""
        print(
            f"  {s['names']}{aligned}, batch {s['batch']}, k={s['k']}: plain {s['plain_tok_s']:.0f} tok/s, "
            f"speculative {s['spec_tok_s']:.0f} tok/s, ratio {s['ratio']:.2f}x (CPU time {s['cpu_ratio']:.2f}x), "
            f"mean accepted {s['mean_accepted']:.2f}"
        )
    print("remote (lmfuse serve on 127.0.0.1) vs local, 2 members (identical text):")
    for s in r.get("remote", []):
        print(
            f"  speculate={s['speculate']}, batch {s['batch']}: {s['calls_per_token']:.2f} HTTP calls per "
            f"token ({s['calls_per_token_per_member']:.2f} per member), {s['remote_ms_per_token']:.1f} ms/token "
            f"remote vs {s['local_ms_per_token']:.1f} local, {s['client_ms_per_call']:.1f} ms per call"
            + (
                f" of which {s['overhead_ms_per_call']:.1f} ms client overhead over the server's "
                f"{s['server_ms_per_call']:.1f} ms"
                if s["server_ms_per_call"] is not None
                else " (the server reported no time of its own)"
            )
        )
    print("top-K truncation: remote with K log-probs per call vs local (K=5000 covers the vocabulary):")
    for s in r.get("truncation", []):
        diff = s["mean_abs_logprob_diff"]
        print(
            f"  {s['members']}, K={s['K']}: same text {s['same_text']:.0%}, mean |delta logprob| of committed "
            f"tokens {'n/a' if diff is None else f'{diff:.4f}'}"
        )


if __name__ == "__main__":
    sys.exit(main())
