"""``lmfuse demo``: run every method on the zoo and print one table (``--record``: and save it)."""

from __future__ import annotations

import argparse

from lmfuse.demo import DEMO_MODULES, THREADS


def add_parser(sub: argparse._SubParsersAction) -> None:
    methods = ", ".join(m.split(".")[1] for m in DEMO_MODULES)
    p = sub.add_parser("demo", help="run every fusion method on the zoo and print an accuracy table")
    p.add_argument("--per-op", type=int, default=50, help="held-out questions per operation (max 100)")
    p.add_argument(
        "--only", nargs="*", metavar="METHOD",
        help=f"only these methods: {methods} (none named: the zoo members only)",
    )  # fmt: skip
    p.add_argument(
        "--threads", type=int, default=THREADS,
        help=f"torch threads (default {THREADS}); the numbers are the same on every run with the same count",
    )  # fmt: skip
    p.add_argument("--record", metavar="FILE.json", help="also save the table and every row's numbers here")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --record file")
    p.add_argument(
        "--plot-dir", metavar="DIR", help="where rows write pictures (default: a new temporary folder)"
    )
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import tempfile
    import time

    from lmfuse.core.loading import quiet_transformers
    from lmfuse.demo import run_demo
    from lmfuse.demo_record import format_header, format_row, intro, make_record, write_record

    if args.record:
        from lmfuse.core.atomic import check_output_file

        check_output_file(args.record, args.overwrite)  # before minutes of work
    quiet_transformers()
    plot_dir = args.plot_dir or tempfile.mkdtemp(prefix="lmfuse-demo-")
    print(intro(args.per_op))
    print(format_header())
    start, cpu = time.perf_counter(), time.process_time()
    rows = run_demo(
        per_op=args.per_op, methods=args.only, threads=args.threads, plot_dir=plot_dir,
        on_row=lambda row: print(format_row(row), flush=True),
    )  # fmt: skip
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    print(f"{seconds:.0f}s in all ({cpu:.0f}s of CPU), {args.threads} thread(s)")
    for row in rows:
        for what, path in row.files.items():
            print(f"{row.name}: {what} in {path}")
    if args.record:
        record = make_record(rows, args.per_op, args.threads, args.only, seconds, cpu)
        print(f"recorded in {write_record(args.record, record)}")
    return 0
