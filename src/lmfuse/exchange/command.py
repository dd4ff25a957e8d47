"""``lmfuse exchange`` (EoT) and ``lmfuse moa``: parse, call the API, print."""

from __future__ import annotations

import argparse
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    for name, help_text in (
        ("exchange", "Exchange-of-Thought: agents re-solve each question after reading their peers"),
        ("moa", "Mixture-of-Agents: layers of proposers, then an aggregator"),
    ):
        description = (
            f"{help_text}. Backends and agents come from a YAML recipe; results are appended to -o as each "
            "question finishes, so re-running the same command resumes (questions whose calls failed are "
            "retried; the exit code is 1 while any did)."
        )
        p = sub.add_parser(name, help=help_text, description=description)
        p.add_argument("--config", required=True, help="YAML recipe (see examples/exchange/)")
        src = p.add_mutually_exclusive_group(required=True)
        src.add_argument("--input", help='question JSONL: {"id": ..., "question": ..., "answer": optional}')
        src.add_argument("--zoo-questions", type=int, metavar="PER_OP", help="the zoo's held-out questions")
        p.add_argument("-o", "--output", required=True, help="results JSONL (re-running resumes it)")
        p.add_argument("--transcript", help="also append every prompt and reply to this JSONL file")
        p.add_argument("--concurrency", type=int, default=8, help="questions in flight at once (default 8)")
        p.add_argument("--overwrite", action="store_true", help="start the output (and transcript) afresh")
        p.add_argument("--no-progress", action="store_true", help="no progress bar")
        p.set_defaults(func=_run, method=name)


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tqdm import tqdm

    from lmfuse.core.atomic import output_lock
    from lmfuse.core.config import load_config
    from lmfuse.core.loading import quiet_transformers
    from lmfuse.exchange import runner
    from lmfuse.exchange.config import EoTConfig, MoAConfig

    quiet_transformers()
    if args.concurrency < 1:
        from lmfuse.errors import ConfigError

        raise ConfigError(f"--concurrency: expected >= 1, found {args.concurrency}")
    cls = EoTConfig if args.method == "exchange" else MoAConfig
    config = load_config(cls, args.config)
    items = (
        runner.zoo_questions(args.zoo_questions) if args.input is None else runner.read_questions(args.input)
    )
    source = args.input or f"zoo held-out set, {args.zoo_questions} per operation"
    output = Path(args.output)
    runner.check_paths(output, [args.input, args.config], args.transcript)
    solver = _solver(args.method, config)  # fails on a missing key or model before anything is written
    with output_lock(output):  # a second run on this output fails here, before touching anything
        if not args.overwrite:
            runner.answered_ids(output)  # refuses a file that is not a results file
        runner.check_recipe(output, config, source, args.overwrite)
        for warning in solver.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        if args.overwrite and args.transcript:
            Path(args.transcript).unlink(missing_ok=True)
        done = runner.answered_ids(output)
        bar = tqdm(total=len(items), desc=args.method, unit="q", disable=args.no_progress, file=sys.stderr)
        bar.update(sum(it.id in done for it in items))
        try:
            s = runner.run_questions(
                solver, items, output, args.transcript, args.concurrency, lambda _: bar.update()
            )
        finally:
            bar.close()
    acc = f"accuracy {s.accuracy:.3f} on {s.scored}" if s.accuracy is not None else "no expected answers"
    stops = ", ".join(f"{k} {v}" for k, v in sorted(s.stops.items())) or "-"
    print(f"{args.method}: answered {s.answered} of {s.total} ({s.skipped} already in {output}); {acc}")
    print(f"stops: {stops}")
    print(
        f"calls {s.calls}, tokens {s.prompt_tokens} prompt + {s.completion_tokens} completion, "
        f"failed calls {s.failed_calls}, {s.seconds:.1f} s"
    )
    if s.truncated:
        print(
            f"warning: {s.truncated} replies were cut at max_tokens (finish_reason length) and their "
            f"answers taken from unfinished text; raise max_tokens (see 'truncated' in {output})",
            file=sys.stderr,
        )
    if s.failed_questions:
        print(
            f"lmfuse {args.method}: error: {s.failed_calls} calls failed after retries in "
            f"{s.failed_questions} questions (see 'failures' in {output}); re-run the same command "
            "to retry those questions",
            file=sys.stderr,
        )
        return 1
    return 0


def _solver(method: str, config):
    if method == "exchange":
        from lmfuse.exchange.eot import EoT

        return EoT(config)
    from lmfuse.exchange.moa import MoA

    return MoA(config)
