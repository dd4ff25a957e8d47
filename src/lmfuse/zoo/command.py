"""``lmfuse zoo list`` and ``lmfuse zoo eval NAME``."""

from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("zoo", help="the tiny trained models shipped with lmfuse")
    zsub = p.add_subparsers(dest="zoo_command", metavar="ZOO_COMMAND", required=True)
    ls = zsub.add_parser("list", help="list zoo models with their paths and held-out accuracy")
    ls.set_defaults(func=_list)
    ev = zsub.add_parser("eval", help="evaluate a model (zoo name or path) on the held-out set")
    ev.add_argument("model", help="zoo name (base, add, ...), zoo:NAME, or a model directory")
    ev.add_argument("--per-op", type=int, default=100, help="questions per operation (max 100)")
    ev.set_defaults(func=_eval)


def _list(args: argparse.Namespace) -> int:
    from lmfuse import zoo

    print("accuracy on the full held-out set (100 questions per operation; `lmfuse demo` uses 50 by default)")
    print(f"{'name':<11} {'all':>5} {'add':>5} {'sub':>5} {'mul':>5}  path")
    for name in zoo.names():
        card = zoo.path(name) / "training.json"
        acc = json.loads(card.read_text())["accuracy"] if card.is_file() else {}
        cells = " ".join(f"{acc.get(k, float('nan')):>5.2f}" for k in ("all", "add", "sub", "mul"))
        print(f"{name:<11} {cells}  {zoo.path(name)}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from lmfuse import zoo
    from lmfuse.moe.prompt import load_model_and_tokenizer  # plain models, and prompt-routed MoEs

    target = args.model if ("/" in args.model or ":" in args.model) else f"zoo:{args.model}"
    questions = zoo.eval_set(args.per_op)  # a bad --per-op fails before the model loads
    model, tok = load_model_and_tokenizer(target, dtype="float32")
    result = zoo.evaluate(zoo.hf_generate_fn(model, tok), questions)
    print(
        " ".join(f"{k}={v:.3f}" for k, v in result.row().items())
        + f"  ({result.n} questions, {result.seconds:.1f} s)"
    )
    return 0
