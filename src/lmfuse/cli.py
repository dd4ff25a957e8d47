"""The ``lmfuse`` command line: the command table, argument parsing and printing only.

Each command lives in a module defining ``add_parser(subparsers)`` (``lmfuse/<method>/command.py``);
its handlers call the method's API and print. ``COMMANDS`` maps each command name to that module and
the one-line help ``lmfuse --help`` shows, so that the listing needs no import at all and running a
command imports only its own module: ``lmfuse vote`` never loads torch. An ``LmfuseError`` becomes a
one-paragraph message on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from lmfuse import __version__
from lmfuse.errors import LmfuseError

# Command name: (module defining add_parser(subparsers), help in `lmfuse --help`). One line per command;
# a module that defines several commands (exchange, moa) appears once per command.
COMMANDS: dict[str, tuple[str, str]] = {
    "zoo": ("lmfuse.zoo.command", "the tiny trained models shipped with lmfuse"),
    "demo": ("lmfuse.demo_command", "run every fusion method on the zoo and print an accuracy table"),
    "vote": ("lmfuse.vote.command", "crowd voting: keep the candidate most similar to all others"),
    "ensemble": ("lmfuse.ensemble.command", "token-level probability ensemble: several models decode as one"),
    "graft": ("lmfuse.graft.command", "new checkpoints from layer slices (depth up-scaling, splicing)"),
    "train": ("lmfuse.graft.command", "continued pre-training of a causal LM on text or JSONL files"),
    "merge": ("lmfuse.merge.command", "weight-space merging of fine-tunes (mergekit recipes), merge search"),
    "moe": (
        "lmfuse.moe.command",
        "mixture-of-experts: build MoE checkpoints, train routers, inspect routing",
    ),
    "exchange": ("lmfuse.exchange.command", "Exchange-of-Thought: agents re-solve after reading their peers"),
    "moa": ("lmfuse.exchange.command", "Mixture-of-Agents: layers of proposers, then an aggregator"),
    "serve": ("lmfuse.serve.command", "OpenAI-compatible server: models and fusions, each one model id"),
}


class _Only:
    """Subparsers that keep only ``name``: a module's other commands go to throwaway parsers."""

    def __init__(self, sub: argparse._SubParsersAction, name: str) -> None:
        self.sub, self.name = sub, name

    def add_parser(self, name: str, **kwargs) -> argparse.ArgumentParser:
        if name == self.name:
            return self.sub.add_parser(name, **kwargs)
        return argparse.ArgumentParser(prog=name, add_help=False)

    def __getattr__(self, attr: str):
        return getattr(self.sub, attr)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s module is imported (every other command is listed, not built)."""
    parser = argparse.ArgumentParser(
        prog="lmfuse",
        description="Fuse large language models: crowd voting, token-level ensembles, grafting, "
        "mixture-of-experts, and text exchange between models.",
    )
    parser.add_argument("--version", action="version", version=f"lmfuse {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        if name == command:
            importlib.import_module(module).add_parser(_Only(sub, name))
        else:
            sub.add_parser(name, help=help_text, add_help=False)
    return parser


def _command(argv: list[str]) -> str | None:
    """The command named on the line (the first argument that is not an option), if it is known."""
    first = next((a for a in argv if not a.startswith("-")), None)
    return first if first in COMMANDS else None


def _quiet_transformers() -> None:
    """No per-load "Loading weights" bars or advisory warnings from transformers in lmfuse's output
    (a user's own TRANSFORMERS_VERBOSITY / HF_HUB_DISABLE_PROGRESS_BARS win)."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if "transformers" in sys.modules:  # already imported: apply now
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = _command(argv)
    if command is not None:
        _quiet_transformers()
    parser = build_parser(command)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        return int(args.func(args) or 0)
    except LmfuseError as exc:
        print(f"lmfuse {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # a TrainingInterrupted says where the work was kept
        print(f"lmfuse {args.command}: interrupted" + (f": {exc}" if str(exc) else ""), file=sys.stderr)
        return 130
    except (UnicodeDecodeError, OSError) as exc:  # an I/O fault is the user's to fix: one line, no traceback
        from lmfuse.core.faults import describe_fault

        print(f"lmfuse {args.command}: error: {describe_fault(exc)}", file=sys.stderr)
        return 2 if isinstance(exc, UnicodeDecodeError) else 1
    except Exception as exc:  # safetensors reports a failed write (disk full) as its own error type
        from lmfuse.core.faults import describe_fault, is_write_fault

        if not is_write_fault(exc):
            raise
        print(f"lmfuse {args.command}: error: {describe_fault(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
