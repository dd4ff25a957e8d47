"""The ``lmfuse`` command line: the command table, argument parsing and printing only.

Each method's subcommands live in ``lmfuse/<method>/command.py`` as ``add_parser(subparsers)``; their
handlers call the method's API and print. An ``LmfuseError`` becomes a one-paragraph message on stderr
and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from lmfuse import __version__
from lmfuse.errors import LmfuseError

# One module per command group, each defining add_parser(subparsers). Keep one entry per line.
COMMAND_MODULES = [
    "lmfuse.zoo.command",
    "lmfuse.demo_command",
    "lmfuse.vote.command",
    "lmfuse.ensemble.command",
    "lmfuse.graft.command",
    "lmfuse.merge.command",
    "lmfuse.moe.command",
    "lmfuse.exchange.command",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lmfuse",
        description="Fuse large language models: crowd voting, token-level ensembles, grafting, "
        "mixture-of-experts, and text exchange between models.",
    )
    parser.add_argument("--version", action="version", version=f"lmfuse {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        return int(args.func(args) or 0)
    except LmfuseError as exc:
        print(f"lmfuse {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"lmfuse {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
