"""How correlated the zoo members' errors are, on the held-out set (greedy answers).

    .venv/bin/python scripts/zoo_errors.py

Per pair: phi of per-question correctness, how many questions both got wrong, and how many of those
with the same wrong answer; then the share of questions some member gets right.
"""

from __future__ import annotations

import itertools

import torch

from lmfuse import zoo


def main() -> None:
    torch.set_num_threads(1)
    qs = zoo.eval_set()
    res = {n: zoo.evaluate(zoo.hf_generate_fn(*zoo.load(n)), qs, batch_size=100) for n in zoo.names()}
    ok = {n: [p == q.answer for p, q in zip(r.predictions, qs, strict=True)] for n, r in res.items()}
    print("| pair | phi | both wrong | same wrong answer |\n|---|---|---|---|")
    for a, b in itertools.combinations(res, 2):
        phi = torch.corrcoef(torch.tensor([ok[a], ok[b]], dtype=torch.float))[0, 1].item()
        wrong = [i for i in range(len(qs)) if not ok[a][i] and not ok[b][i]]
        same = sum(res[a].predictions[i] == res[b].predictions[i] for i in wrong)
        print(f"| {a}-{b} | {phi:.2f} | {len(wrong)} | {same} |")
    oracle = sum(any(ok[n][i] for n in res) for i in range(len(qs))) / len(qs)
    print(f"some member right: {oracle:.0%}")


if __name__ == "__main__":
    main()
