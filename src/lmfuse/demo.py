"""``lmfuse demo``: every method on the zoo, one table.

First each zoo member's accuracy on the held-out arithmetic questions, then one or more rows per
fusion method, each beside the best member it fuses and, where one exists, a same-budget baseline.
Each method contributes ``demo_rows(ctx) -> list[DemoRow]`` from its own ``lmfuse/<method>/demo.py``;
this file only loads the members once, collects the rows and adds the best-member comparison.

Deterministic: ``torch`` runs on ``threads`` threads and is re-seeded before each method, so the numbers
are the same on every run with the same thread count, whichever methods are selected.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

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
SEED = 0
"""``torch.manual_seed`` before each method's rows."""
THREADS = 1
"""Default ``torch`` threads: the zoo's tiny models run fastest on one (more threads mostly contend)."""


@dataclass
class DemoRow:
    """One line of the demo table."""

    name: str
    accuracy: dict[str, float]
    """``{"all": ..., "add": ..., "sub": ..., "mul": ...}`` on the held-out questions."""
    seconds: float
    kind: str = "fusion"
    """``member``, ``fusion`` or ``baseline`` (a same-budget comparison for the fusion rows)."""
    note: str = ""
    fuses: tuple[str, ...] = ()
    """Zoo members this fusion combines: ``run_demo`` adds ``best member X 0.62`` to the note."""
    below: str = ""
    """The measured reason, added to the note when the fusion scores below its best member."""
    files: dict[str, str] = field(default_factory=dict)
    """What the row wrote (e.g. ``{"loss curve": "/tmp/.../graft_loss.png"}``); not in the table."""


@dataclass
class DemoContext:
    """What every method's demo shares: the questions and the loaded zoo members."""

    questions: list[zoo.Question]
    members: dict[str, tuple] = field(default_factory=dict)
    """name → ``(model, tokenizer)``, float32, CPU, eval mode."""
    results: dict[str, zoo.EvalResult] = field(default_factory=dict)
    """name → the member's own evaluation."""
    plot_dir: Path | None = None
    """Where rows may write pictures (``None``: no pictures)."""
    cache: dict = field(default_factory=dict)
    """Work shared between methods (e.g. sampled answers), keyed by whoever computes it."""

    def member(self, name: str) -> tuple:
        if name not in self.members:
            self.members[name] = zoo.load(name)
        return self.members[name]

    def best_member(self, names: tuple[str, ...] | list[str]) -> str | None:
        """The most accurate of ``names`` on the demo's questions (first of equals), evaluating as needed."""
        for n in names:
            if n not in self.results:
                self.results[n] = zoo.evaluate(zoo.hf_generate_fn(*self.member(n)), self.questions)
        return max(names, key=lambda n: self.results[n].accuracy, default=None)


def against_best(ctx: DemoContext, fuses: tuple[str, ...] | list[str], predictions: list[str | None]) -> str:
    """Measured reason text: how many of the best member's right answers a fusion lost, and gained."""
    best = ctx.best_member(fuses)
    mine = ctx.results[best].predictions
    right = [q.answer for q in ctx.questions]
    lost = sum(m == r != p for m, p, r in zip(mine, predictions, right, strict=True))
    gained = sum(p == r != m for m, p, r in zip(mine, predictions, right, strict=True))
    weak = [n for n in fuses if n != best and ctx.results[n].accuracy < 0.5]
    tail = f" (members under 0.50: {', '.join(weak)})" if weak else ""
    return f"loses {lost} of {best}'s right answers, gains {gained}{tail}"


def compare_with_best(row: DemoRow, ctx: DemoContext) -> None:
    """Append ``best member X 0.62`` to a fusion row's note, and its ``below`` reason if it scores less."""
    best = ctx.best_member(row.fuses) if row.fuses else None
    if best is None:
        return
    acc = ctx.results[best].accuracy
    parts = [row.note, f"best member {best} {acc:.2f}"]
    if row.accuracy["all"] < acc and row.below:
        parts.append(f"below it: {row.below}")
    row.note = "; ".join(p for p in parts if p)


def run_demo(
    per_op: int = 50,
    methods: list[str] | None = None,
    on_row: Callable[[DemoRow], None] | None = None,
    threads: int = THREADS,
    plot_dir: str | Path | None = None,
) -> list[DemoRow]:
    """Evaluate the zoo members, then each method's rows; ``on_row`` sees each row as it is made."""
    import torch

    known = [m.split(".")[1] for m in DEMO_MODULES]
    problems = []
    if unknown := [m for m in methods or [] if m not in known]:
        problems.append(
            f"--only: unknown method(s) {', '.join(map(repr, unknown))}; expected {', '.join(known)}"
        )
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        problems.append(f"--threads: expected a positive integer, found {threads!r}")
    if problems:
        from lmfuse.errors import ConfigError

        raise ConfigError(problems)
    ctx = DemoContext(questions=zoo.eval_set(per_op), plot_dir=Path(plot_dir) if plot_dir else None)
    rows: list[DemoRow] = []

    def emit(row: DemoRow) -> None:
        compare_with_best(row, ctx)
        rows.append(row)
        if on_row:
            on_row(row)

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for name in zoo.names():
            model, tok = ctx.member(name)
            result = zoo.evaluate(zoo.hf_generate_fn(model, tok), ctx.questions)
            ctx.results[name] = result
            emit(DemoRow(name, result.row(), result.seconds, kind="member"))
        for module in DEMO_MODULES:
            short = module.split(".")[1]
            if methods is not None and short not in methods:  # [] : the members only
                continue
            torch.manual_seed(SEED)
            start = time.perf_counter()
            for row in importlib.import_module(module).demo_rows(ctx):
                row.seconds = row.seconds or time.perf_counter() - start
                emit(row)
    finally:
        torch.set_num_threads(before)
    return rows
