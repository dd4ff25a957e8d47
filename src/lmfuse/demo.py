"""``lmfuse demo``: every method on the zoo, one table.

First each zoo member's accuracy on the held-out arithmetic questions, then one or more rows per
fusion method. Each method contributes ``demo_rows(ctx) -> list[DemoRow]`` from its own
``lmfuse/<method>/demo.py``; this file only loads the members once and collects the rows.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from lmfuse import zoo

# Methods that add rows, in display order. Keep one entry per line.
DEMO_MODULES = [
    "lmfuse.vote.demo",
    "lmfuse.ensemble.demo",
    "lmfuse.graft.demo",
    "lmfuse.merge.demo",
    "lmfuse.moe.demo",
    "lmfuse.exchange.demo",
]


@dataclass
class DemoRow:
    """One line of the demo table."""

    name: str
    accuracy: dict[str, float]
    """``{"all": ..., "add": ..., "sub": ..., "mul": ...}`` on the held-out questions."""
    seconds: float
    kind: str = "fusion"
    """``member`` or ``fusion``."""
    note: str = ""


@dataclass
class DemoContext:
    """What every method's demo shares: the questions and the loaded zoo members."""

    questions: list[zoo.Question]
    members: dict[str, tuple] = field(default_factory=dict)
    """name → ``(model, tokenizer)``, float32, CPU, eval mode."""
    results: dict[str, zoo.EvalResult] = field(default_factory=dict)
    """name → the member's own evaluation."""

    def member(self, name: str) -> tuple:
        if name not in self.members:
            self.members[name] = zoo.load(name)
        return self.members[name]


def run_demo(
    per_op: int = 50,
    methods: list[str] | None = None,
    on_row: Callable[[DemoRow], None] | None = None,
) -> list[DemoRow]:
    """Evaluate the zoo members, then each method's rows; ``on_row`` sees each row as it is made."""
    known = [m.split(".")[1] for m in DEMO_MODULES]
    if unknown := [m for m in methods or [] if m not in known]:
        from lmfuse.errors import ConfigError

        raise ConfigError(
            f"--only: unknown method(s) {', '.join(map(repr, unknown))}; expected {', '.join(known)}"
        )
    ctx = DemoContext(questions=zoo.eval_set(per_op))
    rows: list[DemoRow] = []

    def emit(row: DemoRow) -> None:
        rows.append(row)
        if on_row:
            on_row(row)

    for name in zoo.names():
        model, tok = ctx.member(name)
        result = zoo.evaluate(zoo.hf_generate_fn(model, tok), ctx.questions)
        ctx.results[name] = result
        emit(DemoRow(name, result.row(), result.seconds, kind="member"))
    for module in DEMO_MODULES:
        short = module.split(".")[1]
        if methods is not None and short not in methods:  # [] : the members only
            continue
        start = time.perf_counter()
        for row in importlib.import_module(module).demo_rows(ctx):
            row.seconds = row.seconds or time.perf_counter() - start
            emit(row)
    return rows
