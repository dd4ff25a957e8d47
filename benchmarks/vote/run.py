"""Crowd voting with char-level ROUGE-L: lmfuse vs the rouge-score package, side by side.

The reference is what the WSDM Cup 2024 solution ran: rouge-score's pure-Python LCS with a character
tokenizer, one call per pair (28 pairs for 8 candidates, using symmetry), sum, first argmax.
Three measurements in one run:

1. **winners**: ``--sets`` candidate sets of 8 texts of ``--short`` characters; the reference on all
   28 pairs of every set; winners must be identical and every F bit-identical. The ratio of the
   two end-to-end voting times is reported (lmfuse: median of 5 runs; the reference: one run).
2. **long**: ``--long-sets`` sets of 8 texts of 1,000-2,000 characters, the reference again on all
   pairs (slow: ~0.1-0.7 s a pair), winners and values compared, per-pair ratio.
3. **throughput**: ``--questions`` questions x 8 candidates of ~1,000 characters voted by lmfuse
   alone (target: 10,000 questions in under 10 s on 2 cores).
4. **percall**: ``--percall-questions`` of the same kind, ``vote`` called once per question against one
   ``vote_batch``; CPU seconds of each and their ratio (issue 16: near 1).
5. **prune**: the throughput workload with ``prune=True`` against all pairs: CPU seconds, share of
   pairs computed, identical winners and ties, bit-identical scores for every candidate that can win.

Absolute times on shared machines are noise; the ratios are measured on the same inputs in one run.

    python benchmarks/vote/run.py            # full (5-10 minutes on 2 shared cores: the reference is slow)
    python benchmarks/vote/run.py --smoke    # seconds; exercised by tests/vote/test_benchmark.py
    python benchmarks/vote/run.py --parts throughput   # one measurement
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

from lmfuse.vote import vote, vote_batch

PARTS = ("winners", "long", "throughput", "percall", "prune")


def make_sets(rng: np.random.Generator, n_sets: int, lo: int, hi: int, n: int = 8) -> list[list[str]]:
    """``n_sets`` sets of ``n`` noisy copies (word swaps, drops) of one answer of lo-hi characters."""
    vocab = np.array(
        [
            "the",
            "of",
            "and",
            "to",
            "in",
            "is",
            "that",
            "it",
            "for",
            "was",
            "on",
            "are",
            "as",
            "with",
            "be",
            "by",
            "this",
            "answer",
            "result",
            "because",
            "so",
            "number",
            "value",
            "total",
            "first",
            "then",
            "we",
            "have",
            "12",
            "7",
            "42",
            "100",
            "3.5",
            "données",
            "réponse",
            "答案",
            "是",
            "结果",
            "😀",
            "naïve",
            "sum",
            "product",
            "minus",
            "times",
            "equals",
            "therefore",
            "hence",
            "thus",
            "finally",
            "compute",
            "step",
        ]
    )
    sets = []
    for _ in range(n_sets):
        target = int(rng.integers(lo, hi + 1))
        gold = rng.choice(vocab, size=target // 3)  # ~5 chars a word with its space: trimmed below
        group = []
        for _ in range(n):
            noise = rng.uniform(0.05, 0.4)
            words = gold.copy()
            swap = rng.random(words.size) < noise
            words[swap] = rng.choice(vocab, size=int(swap.sum()))
            words = words[rng.random(words.size) >= noise / 3]
            text = " ".join(words.tolist())
            while len(text) < lo:
                text += " " + " ".join(rng.choice(vocab, size=20).tolist())
            group.append(text[: int(rng.integers(lo, hi + 1))])
        sets.append(group)
    return sets


def reference_vote(sets: list[list[str]]) -> tuple[list[int], list[np.ndarray], float]:
    """rouge-score char ROUGE-L: winners, matrices and seconds."""
    from rouge_score import rouge_scorer, tokenizers

    class Chars(tokenizers.Tokenizer):
        def tokenize(self, text):
            return list(text)

    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=Chars())
    winners, matrices = [], []
    start = time.perf_counter()
    for group in sets:
        n = len(group)
        m = np.ones((n, n))
        for i in range(n):
            for j in range(i + 1, n):
                m[i, j] = m[j, i] = scorer.score(group[i], group[j])["rougeL"].fmeasure
        scores = [sum(m[i, j] for j in range(n) if j != i) for i in range(n)]
        winners.append(scores.index(max(scores)))
        matrices.append(m)
    return winners, matrices, time.perf_counter() - start


def ours(sets: list[list[str]]) -> tuple[list, float, float]:
    """lmfuse's vote: results, wall seconds, CPU seconds of this process (all its threads)."""
    start, cpu = time.perf_counter(), time.process_time()
    results = vote_batch(sets, "char_rouge_l")
    return results, time.perf_counter() - start, time.process_time() - cpu


def compare(name: str, sets: list[list[str]]) -> dict:
    """Reference and lmfuse on the same sets: winners, values and time ratio."""
    ref_winners, ref_mats, ref_s = reference_vote(sets)
    runs = [ours(sets) for _ in range(5)]  # the median of 5: one short call is at the scheduler's mercy
    results, our_s = runs[0][0], float(np.median([r[1] for r in runs]))
    diff = [k for k, (w, r) in enumerate(zip(ref_winners, results, strict=True)) if w != r.index]
    off = ~np.eye(8, dtype=bool)
    bit_equal = all(np.array_equal(m[off], r.matrix[off]) for m, r in zip(ref_mats, results, strict=True))
    pairs = sum(len(g) * (len(g) - 1) // 2 for g in sets)
    lengths = [len(t) for g in sets for t in g]
    row = {
        "name": name, "sets": len(sets), "pairs": pairs, "chars": [min(lengths), max(lengths)],
        "winners_identical": not diff, "winner_mismatches": diff[:10], "values_bit_identical": bit_equal,
        "ties": sum(r.tie for r in results), "reference_s": ref_s, "lmfuse_s": our_s,
        "reference_ms_per_pair": 1e3 * ref_s / pairs, "lmfuse_us_per_pair": 1e6 * our_s / pairs,
        "speedup": ref_s / our_s,
    }  # fmt: skip
    return row


def throughput(rng: np.random.Generator, questions: int) -> dict:
    sets = make_sets(rng, questions, 900, 1100)
    results, seconds, cpu = ours(sets)
    if len(results) != questions:
        raise RuntimeError(f"expected {questions} results, found {len(results)}")
    return {"name": "throughput", "questions": questions, "candidates": 8, "chars": "900-1100",
            "lmfuse_s": seconds, "lmfuse_cpu_s": cpu, "questions_per_s": questions / seconds,
            "load_avg_1min": os.getloadavg()[0]}  # fmt: skip


def percall(rng: np.random.Generator, questions: int) -> dict:
    sets = make_sets(rng, questions, 900, 1100)
    cpu = time.process_time()
    loop = [vote(s) for s in sets]
    loop_cpu, cpu = time.process_time() - cpu, time.process_time()
    batch = vote_batch(sets)
    batch_cpu = time.process_time() - cpu
    same = all(a.index == b.index and a.scores == b.scores for a, b in zip(loop, batch, strict=True))
    return {"name": "percall", "questions": questions, "vote_loop_cpu_s": loop_cpu, "vote_batch_cpu_s": batch_cpu,
            "vote_ms_per_call": 1e3 * loop_cpu / questions, "batch_ms_per_question": 1e3 * batch_cpu / questions,
            "ratio": loop_cpu / batch_cpu, "winners_identical": same}  # fmt: skip


def prune(rng: np.random.Generator, questions: int) -> dict:
    sets = make_sets(rng, questions, 900, 1100)
    cpu = time.process_time()
    full = vote_batch(sets)
    full_cpu, cpu = time.process_time() - cpu, time.process_time()
    pruned = vote_batch(sets, prune=True)
    pruned_cpu = time.process_time() - cpu
    same = all((a.index, a.tied) == (b.index, b.tied) for a, b in zip(full, pruned, strict=True))
    exact = all(
        all(a.scores[i] == b.scores[i] for i in range(len(a.scores)) if i not in b.bounds)
        for a, b in zip(full, pruned, strict=True)
    )
    share = sum(r.pairs_computed for r in pruned) / sum(r.pairs_total for r in pruned)
    return {"name": "prune", "questions": questions, "all_pairs_cpu_s": full_cpu, "prune_cpu_s": pruned_cpu,
            "share_of_pairs_computed": share, "winners_identical": same, "values_bit_identical": exact,
            "speedup": full_cpu / pruned_cpu}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes, a few seconds")
    p.add_argument("--sets", type=int, default=1000, help="sets for the all-pairs winner check")
    p.add_argument("--short", type=int, nargs=2, default=[200, 200], metavar=("MIN", "MAX"))
    p.add_argument("--long-sets", type=int, default=2, help="sets of 1,000-2,000 characters")
    p.add_argument("--questions", type=int, default=10_000, help="throughput: questions of 8 x ~1,000 chars")
    p.add_argument("--percall-questions", type=int, default=1000, help="percall: questions")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="which measurements to run")
    args = p.parse_args(argv)
    from lmfuse.core.atomic import atomic_write_text, check_output_option

    check_output_option(args.json, args.overwrite, p.error)  # before the work, not after
    if args.smoke:
        args.sets, args.short, args.long_sets, args.questions = 20, [50, 120], 1, 200
        args.percall_questions = 50
    rng = np.random.default_rng(args.seed)
    vote_batch([["warm", "up"]])  # imports and first-call costs stay out of the timings
    rows = []
    if "winners" in args.parts:
        rows.append(compare("winners", make_sets(rng, args.sets, *args.short)))
    if "long" in args.parts and args.long_sets:
        lo, hi = (300, 400) if args.smoke else (1000, 2000)
        rows.append(compare("long", make_sets(rng, args.long_sets, lo, hi)))
    if "throughput" in args.parts:
        rows.append(throughput(rng, args.questions))
    if "percall" in args.parts:
        rows.append(percall(rng, args.percall_questions))
    if "prune" in args.parts:
        rows.append(prune(rng, args.questions))
    machine = (
        f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores, python {platform.python_version()}"
    )
    print(f"# vote benchmark ({'smoke' if args.smoke else 'full'}), {time.strftime('%Y-%m-%d')}, {machine}")
    for row in rows:
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}))
    if args.json:
        atomic_write_text(args.json, json.dumps(rows, indent=2) + "\n")  # never a half-written result file
    ok = all(r.get("winners_identical", True) and r.get("values_bit_identical", True) for r in rows)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
