"""Benchmark of the token-level ensemble, every comparison side by side in one run.

1. throughput of the cached ensemble vs its members run alone (``model.generate``), batch 1 and 8:
   ideal = 1 / sum(1 / tps_i) (members one after the other); target >= 0.9 of it;
2. vs the naive ensemble that recomputes the whole prefix every step, at 256 new tokens;
3. selective ensembling (gate) on the zoo: speed-up and accuracy change;
4. accuracy and answer perplexity of the ensemble vs the best member on the zoo held-out set.

    python benchmarks/ensemble/run.py            # full (a few minutes on 2 cores)
    python benchmarks/ensemble/run.py --smoke    # seconds; run by the tests
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
from lmfuse.ensemble.naive import naive_generate_ids
from lmfuse.testing import char_tokenizer, tiny_model

PROMPTS = [
    "Q: 12+7= A:",
    "hello world",
    "the quick brown fox",
    "Q: 6*8= A:",
    "What is",
    "tiny",
    "Q: 40-13=",
    "ok",
]


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _members(smoke: bool):
    """Members of three architectures and sizes sharing one tokenizer. Full mode: 24M, 13M and 6M
    parameters, larger than the CPU caches like any real LLM, so that each decode step streams its
    weights from memory whether a member runs alone or interleaved with the others."""
    tok = char_tokenizer()
    sizes = (
        [("llama", 64, 2), ("mistral", 64, 2), ("qwen2", 32, 2)]
        if smoke
        else [("llama", 512, 6), ("mistral", 384, 6), ("qwen2", 256, 6)]
    )
    models = [
        tiny_model(
            arch,
            vocab_size=len(tok),
            seed=i,
            hidden_size=h,
            intermediate_size=4 * h,
            num_hidden_layers=n,
            num_attention_heads=8,
            num_key_value_heads=4,
        )
        for i, (arch, h, n) in enumerate(sizes)
    ]
    return tok, models


def throughput(tok, models, batch: int, new: int, repeats: int) -> dict:
    """Tokens per second of each member alone (its own ``model.generate``, and lmfuse's decoder with that
    member only) and of the ensemble, interleaved run by run so that load changes hit all alike."""
    enc = tok(PROMPTS[:batch], return_tensors="pt", padding=True)
    ids, mask = enc["input_ids"], enc["attention_mask"]

    def hf(m):
        return lambda: m.generate(
            **enc, max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=0
        )

    def ours(members):
        ens = Ensemble([(m, tok) for m in members])
        return lambda: ens.generate_ids(ids, mask, new, ignore_eos=True)

    runs = {f"hf:member{i}": hf(m) for i, m in enumerate(models)}
    runs |= {f"lmfuse:member{i}": ours([m]) for i, m in enumerate(models)}
    runs["ensemble"] = ours(models)
    by_bytes = Ensemble([(m, tok) for m in models], align="bytes")  # same members, aligned by bytes
    runs["ensemble(bytes)"] = lambda: by_bytes.generate(
        PROMPTS[:batch], new, ignore_eos=True, batch_size=batch
    )
    times: dict[str, list[float]] = {k: [] for k in runs}
    for fn in runs.values():
        fn()  # warm-up
    for _ in range(repeats):
        for k, fn in runs.items():
            times[k].append(_timed(fn))
    tps = {k: batch * new / statistics.median(v) for k, v in times.items()}
    out = {
        "batch": batch,
        "new_tokens": new,
        "tps": tps,
        "bytes_vs_ids": tps["ensemble(bytes)"] / tps["ensemble"],
    }
    for kind in ("hf", "lmfuse"):
        ideal = 1 / sum(1 / v for k, v in tps.items() if k.startswith(kind + ":"))
        out[f"ideal_{kind}"] = ideal
        out[f"ratio_{kind}"] = tps["ensemble"] / ideal
    return out


def vs_naive(tok, models, new: int) -> dict:
    """Cached ensemble vs recomputing the prefix every step (greedy, batch 1, same tokens out); the two
    smaller members, so that the naive run stays under a minute."""
    enc = tok(PROMPTS[:1], return_tensors="pt", padding=True)
    ens = Ensemble([(m, tok) for m in models[-2:]])
    ids, mask = enc["input_ids"], enc["attention_mask"]
    out: dict = {}
    cached_t = _timed(lambda: out.setdefault("cached", ens.generate_ids(ids, mask, new, ignore_eos=True)))
    naive_t = _timed(
        lambda: out.setdefault(
            "naive", naive_generate_ids(ens.members, ens.weights, "prob", ids, mask, new, ignore_eos=True)
        )
    )
    agree = float((out["cached"] == out["naive"]).float().mean())
    return {
        "new_tokens": new,
        "cached_s": cached_t,
        "naive_s": naive_t,
        "speedup": naive_t / cached_t,
        "token_agreement": agree,
    }


def _zoo_generate(ens: Ensemble, batch_size: int):
    return lambda prompts: ens.generate(prompts, max_new_tokens=6, batch_size=batch_size)


def selective(questions, names: list[str], gates: list[float], batch_size: int) -> list[dict]:
    """Ungated vs gated ensembles of the same zoo members on the same questions."""
    members = [zoo.load(n) for n in names]
    rows = []
    base_time = None
    for gate in [None, *gates]:
        ens = Ensemble(members, gate=gate)
        res = zoo.evaluate(_zoo_generate(ens, batch_size), questions, batch_size=batch_size)
        base_time = base_time or res.seconds
        rows.append(
            {
                "gate": gate,
                "batch": batch_size,
                "accuracy": res.accuracy,
                "seconds": res.seconds,
                "speedup": base_time / res.seconds,
                "ensembled_fraction": ens.stats.ensembled_fraction,
            }
        )
    return rows


def quality(questions, names: list[str]) -> dict:
    """Accuracy and answer perplexity (of " ANSWER" after the prompt) of each member and the ensemble."""
    prompts, answers = [q.prompt for q in questions], [" " + q.answer for q in questions]
    members = {n: zoo.load(n) for n in names}
    shared = [n for n in names if n != "generalist"]
    rows = {}
    candidates = {n: Ensemble([members[n]]) for n in names}
    if len(shared) > 1:
        candidates["ensemble(" + "+".join(shared) + ")"] = Ensemble([members[n] for n in shared])
    if "generalist" in members and "base" in members:
        candidates["ensemble(base+generalist)"] = Ensemble([members["base"], members["generalist"]])
    for name, ens in candidates.items():
        acc = zoo.evaluate(_zoo_generate(ens, 64), questions).row()
        ppl = None
        if ens.shared_vocab:
            scores = ens.score(answers, prompts)
            ppl = float(
                torch.tensor([s.logprob for s in scores]).sum().neg().div(sum(s.tokens for s in scores)).exp()
            )
        rows[name] = {"accuracy": acc, "answer_perplexity": ppl}
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, a few seconds")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is steadiest on shared cores)")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    args = ap.parse_args(argv)
    from lmfuse.core.atomic import atomic_write_text, check_output_option

    check_output_option(args.json, args.overwrite, ap.error)  # before the work, not after
    torch.set_num_threads(args.threads)
    tok, models = _members(args.smoke)
    new, naive_new, repeats = (8, 16, 1) if args.smoke else (64, 256, 5)
    results: dict = {
        "smoke": args.smoke,
        "threads": args.threads,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    results["throughput"] = [throughput(tok, models, b, new, repeats) for b in (1, 8)]
    results["vs_naive"] = vs_naive(tok, models, naive_new)
    names = zoo.names()
    shared = [n for n in ("base", *zoo.SPECIALISTS) if n in names]
    questions = zoo.eval_set(2 if args.smoke else 50)
    if len(shared) > 1:
        subset = questions[:: 3 if args.smoke else 2]
        results["selective"] = [r for b in (1, 8) for r in selective(subset, shared, [0.9, 0.6], b)]
    results["quality"] = quality(questions, names)
    _print(results)
    if args.json:
        atomic_write_text(args.json, json.dumps(results, indent=2) + "\n")  # never a half-written result file
    return 0


def _print(r: dict) -> None:
    w = sys.stdout.write
    w(
        f"threads={r['threads']} smoke={r['smoke']} {r['date']}\n\n"
        "throughput (tokens/s; ideal = 1/sum(1/tps_i))\n"
    )
    for t in r["throughput"]:
        members = " ".join(f"{k}={v:.0f}" for k, v in t["tps"].items() if k.startswith(("hf:", "lmfuse:")))
        w(
            f"  batch {t['batch']}: {members} ensemble={t['tps']['ensemble']:.0f}\n"
            f"    ratio to ideal: {t['ratio_lmfuse']:.2f} (members alone in lmfuse's decoder), "
            f"{t['ratio_hf']:.2f} (members alone in model.generate)\n"
            f"    byte-aligned decoding of the same members: {t['bytes_vs_ids']:.2f}x "
            "the speed of id decoding\n"
        )
    n = r["vs_naive"]
    w(
        f"\nvs naive recompute at {n['new_tokens']} new tokens: "
        f"cached {n['cached_s']:.2f}s naive {n['naive_s']:.2f}s "
        f"speed-up {n['speedup']:.1f}x (token agreement {n['token_agreement']:.3f})\n"
    )
    if r.get("selective"):
        w("\nselective ensembling on the zoo (base+add+sub+mul; gate = lead top probability)\n")
    for s in r.get("selective", []):
        w(
            f"  batch {s['batch']} gate={s['gate']}: accuracy {s['accuracy']:.3f} time {s['seconds']:.1f}s "
            f"speed-up {s['speedup']:.2f}x "
            f"ensembled {s['ensembled_fraction']:.0%}\n"
        )
    w("\nzoo quality (accuracy all/add/sub/mul, answer perplexity)\n")
    for name, q in r["quality"].items():
        acc = "/".join(f"{v:.2f}" for v in q["accuracy"].values())
        ppl = f"{q['answer_perplexity']:.3f}" if q["answer_perplexity"] is not None else "-"
        w(f"  {name:<34} {acc:<24} {ppl}\n")


if __name__ == "__main__":
    raise SystemExit(main())
