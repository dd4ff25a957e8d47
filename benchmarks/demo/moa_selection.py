"""Choose the demo's MoA configuration on the zoo's validation split, never on the held-out set.

Every candidate is scored on ``lmfuse.zoo.validation_set()`` (60 questions per operation, disjoint from
the held-out set and excluded from the zoo's training). The candidates, fixed before any was run:

- aggregator: each zoo member;
- proposers: all five members, or the three best on the validation split (the MoA paper picks its
  proposers by their own scores; Wang et al. 2024, section 2.3), in zoo order;
- layers of proposers: 1, 2 or 3 (the paper's MoA uses 3, its MoA-Lite 2).

Rule: the highest validation accuracy; ties go to fewer calls per question, then to the first
candidate in the order above. The pick is written with the table (``--json``) and
``lmfuse.exchange.demo`` uses it (a test checks that the two agree and that the pick follows the rule).

    PYTHONPATH=src .venv/bin/python benchmarks/demo/moa_selection.py --json benchmarks/demo/moa_selection.json --overwrite
    PYTHONPATH=src .venv/bin/python benchmarks/demo/moa_selection.py --per-op 2 --smoke   # seconds
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

LAYERS = (1, 2, 3)
TOP = 3
"""The smaller proposer set: the ``TOP`` best members on the validation split."""


def candidates(members: list[str], val_acc: dict[str, float]) -> list[dict]:
    """Every configuration, in the rule's order (aggregator, then proposer set, then layers)."""
    top = sorted(members, key=lambda m: -val_acc[m])[:TOP]
    sets = {"all": list(members), f"top{TOP}": [m for m in members if m in top]}
    return [
        {"aggregator": agg, "proposers": props, "proposer_set": label, "layers": layers,
         "calls": layers * len(props) + 1}
        for agg in members for label, props in sets.items() for layers in LAYERS
    ]  # fmt: skip


def pick(rows: list[dict]) -> dict:
    """The rule: highest accuracy, then fewer calls, then the first listed."""
    return min(enumerate(rows), key=lambda ir: (-ir[1]["accuracy"]["all"], ir[1]["calls"], ir[0]))[1]


def run(per_op: int, smoke: bool = False) -> dict:
    import torch
    from tqdm import tqdm
    from transformers.utils import logging as hf_logging

    from lmfuse import zoo
    from lmfuse.exchange.zoo_agents import solve_all, zoo_moa

    hf_logging.disable_progress_bar()  # no "Loading weights" bar per member (as in lmfuse's CLI)
    torch.set_num_threads(1)
    questions = zoo.validation_set(per_op)
    members = zoo.names()
    loaded = {m: zoo.load(m) for m in members}
    val = {m: zoo.evaluate(zoo.hf_generate_fn(*loaded[m]), questions).row() for m in members}
    configs = candidates(members, {m: v["all"] for m, v in val.items()})
    if smoke:
        configs = configs[:2]
    rows = []
    for cfg in tqdm(configs, desc="MoA candidates", mininterval=5.0):
        torch.manual_seed(0)
        start = time.perf_counter()
        moa = zoo_moa(cfg["proposers"], cfg["aggregator"], loaded.__getitem__, layers=cfg["layers"])
        results = solve_all(moa, [q.prompt for q in questions], [q.id for q in questions])
        scored = zoo.score(questions, [r.answer or "" for r in results])
        calls = sum(r.calls for r in results) / len(questions)
        rows.append({**cfg, "calls": calls, "accuracy": scored.row(), "seconds": time.perf_counter() - start})
    best_member = max(members, key=lambda m: val[m]["all"])
    return {
        "split": f"zoo.validation_set({per_op})", "questions": len(questions), "members": val,
        "best_member": best_member, "rows": rows, "pick": pick(rows),
        "rule": "highest validation accuracy; ties: fewer calls per question, then the first listed",
    }  # fmt: skip


def table(record: dict) -> str:
    lines = [f"validation split: {record['split']}, {record['questions']} questions", ""]
    lines.append(f"{'member':<12}  all   add   sub   mul")
    for m, acc in record["members"].items():
        lines.append(f"{m:<12} " + " ".join(f"{acc[k]:.3f}" for k in ("all", "add", "sub", "mul")))
    lines += ["", f"{'aggregator':<11} {'proposers':<9} layers calls   all   add   sub   mul"]
    chosen = record["pick"]
    for r in record["rows"]:
        acc = " ".join(f"{r['accuracy'][k]:.3f}" for k in ("all", "add", "sub", "mul"))
        mark = "  <- picked" if r is chosen or r == chosen else ""
        lines.append(
            f"{r['aggregator']:<11} {r['proposer_set']:<9} {r['layers']:>6} {r['calls']:>5.1f} {acc}{mark}"
        )
    best = record["best_member"]
    lines += ["", f"best member on validation: {best} {record['members'][best]['all']:.3f}",
              f"rule: {record['rule']}"]  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--per-op", type=int, default=60, help="validation questions per operation (the zoo's split: 60)"
    )
    ap.add_argument("--json", type=Path, help="write the table and the pick here")
    ap.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    ap.add_argument("--smoke", action="store_true", help="the first two candidates only")
    args = ap.parse_args(argv)
    from lmfuse.core.atomic import atomic_write_text, check_output_option

    check_output_option(args.json, args.overwrite, ap.error)  # before the work, not after
    record = run(args.per_op, args.smoke)
    print(table(record))
    if args.json:
        atomic_write_text(args.json, json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
