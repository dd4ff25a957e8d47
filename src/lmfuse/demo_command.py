"""``lmfuse demo``: run every method on the zoo and print one table."""

from __future__ import annotations

import argparse

COLUMNS = ("all", "add", "sub", "mul")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run every fusion method on the zoo and print an accuracy table")
    p.add_argument("--per-op", type=int, default=50, help="held-out questions per operation (max 100)")
    p.add_argument(
        "--only",
        nargs="*",
        metavar="METHOD",
        help="only these methods: vote, ensemble, graft, moe, exchange (none named: the zoo members only)",
    )
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from transformers.utils import logging as hf_logging

    from lmfuse.demo import run_demo

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    print(f"accuracy on {args.per_op} held-out questions per operation (`lmfuse zoo list` shows 100)")
    print(f"{'model / method':<34}" + "".join(f"{c:>6}" for c in COLUMNS) + f"{'time':>8}  note")

    def show(row) -> None:
        cells = "".join(f"{row.accuracy.get(c, float('nan')):>6.2f}" for c in COLUMNS)
        label = row.name if row.kind == "member" else f"* {row.name}"
        print(f"{label:<34}{cells}{row.seconds:>7.1f}s  {row.note}", flush=True)

    run_demo(per_op=args.per_op, methods=args.only, on_row=show)
    return 0
