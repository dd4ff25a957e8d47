"""``lmfuse exchange`` (EoT), ``lmfuse moa`` and ``lmfuse serve``: parse, call the API, print."""

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
    s = sub.add_parser("serve", help="OpenAI-compatible HTTP server over local models (zoo:NAME or dirs)")
    s.add_argument("models", nargs="+", help="zoo:NAME, a zoo name, or a model directory")
    s.add_argument("--name", action="append", help="model id to serve each model under (default: its name)")
    s.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--api-key-env", help="require the key held in this environment variable")
    s.add_argument("--latency", type=float, default=0.0, help="seconds added to every request")
    s.add_argument("--fail-first", type=int, default=0, help="fail the first N requests")
    s.add_argument("--fail-status", type=int, default=500, help="HTTP status of those failures")
    s.add_argument("--hang-first", type=int, default=0, help="then hang the next N requests")
    s.add_argument("--hang-seconds", type=float, default=30.0)
    s.add_argument("--down", action="store_true", help="answer every request with 503")
    s.set_defaults(func=_serve)


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tqdm import tqdm

    from lmfuse.core.atomic import output_lock
    from lmfuse.core.config import load_config
    from lmfuse.exchange import runner
    from lmfuse.exchange.config import EoTConfig, MoAConfig

    _quiet_transformers()
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


def _serve(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from lmfuse.backends.hf import HFBackend
    from lmfuse.errors import ConfigError
    from lmfuse.serve.app import create_app
    from lmfuse.serve.faults import Faults
    from lmfuse.serve.server import serve_forever

    _quiet_transformers()
    names = args.name or []
    if names and len(names) != len(args.models):
        raise ConfigError(f"--name: expected one per model ({len(args.models)}), found {len(names)}")
    faults = Faults(
        args.latency, args.fail_first, args.fail_status, args.hang_first, args.hang_seconds, args.down
    )
    if problems := faults.validate():
        raise ConfigError(problems)
    key = None
    if args.api_key_env:
        key = os.environ.get(args.api_key_env)
        if not key:
            raise ConfigError(f"--api-key-env: environment variable {args.api_key_env} is not set")
    models = {}
    for i, spec in enumerate(args.models):
        path = spec if (":" in spec or "/" in spec or Path(spec).exists()) else f"zoo:{spec}"
        model_id = names[i] if names else Path(path.split(":", 1)[-1]).name
        models[model_id] = HFBackend(model_path=path, name=model_id)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: serving on {args.host}: reachable from other machines", file=sys.stderr)
    print(f"serving {', '.join(models)} at http://{args.host}:{args.port}/v1", file=sys.stderr)
    serve_forever(create_app(models, faults, api_key=key), args.host, args.port)
    return 0


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
