"""Demo rows: EoT and MoA over the zoo members (in-process ``hf`` backends), each with its calls per
question and beside a same-budget baseline: the majority of as many sampled member answers.

With greedy members, more calls would only repeat the same answers, so the honest baseline at a budget
of C calls is self-consistency: C answers sampled from the members (round robin, the most accurate
first, at ``lmfuse.vote.demo.TEMPERATURE``), majority of the extracted numbers.
"""

from __future__ import annotations

import math
import time

from lmfuse import zoo
from lmfuse.demo import DemoContext, DemoRow, against_best
from lmfuse.exchange.zoo_agents import solve_all, zoo_eot, zoo_moa
from lmfuse.vote.demo import sampled_majority

EOT_ROUNDS = 3
# MoA: chosen on the zoo's validation split (``lmfuse.zoo.validation_set``), never on the held-out set,
# by ``benchmarks/demo/moa_selection.py`` (its table and pick: ``benchmarks/demo/moa_selection.json``;
# a test checks that these agree with it). Proposers in zoo order.
MOA_AGGREGATOR = "base"
MOA_PROPOSERS = ("base", "add", "generalist")
MOA_LAYERS = 2


def budget(ctx: DemoContext, members: list[str], calls: int) -> dict[str, int]:
    """``calls`` samples shared round robin over ``members``, the most accurate first."""
    order = sorted(members, key=lambda m: -ctx.results[m].accuracy)
    return {m: calls // len(order) + (i < calls % len(order)) for i, m in enumerate(order)}


def _fusion_row(ctx: DemoContext, name: str, solver, members: list[str], note: str) -> tuple[DemoRow, float]:
    qs = ctx.questions
    start = time.perf_counter()
    results = solve_all(solver, [q.prompt for q in qs], [q.id for q in qs])
    calls = sum(r.calls for r in results) / len(qs)
    scored = zoo.score(qs, [r.answer or "" for r in results])
    early = sum(r.stop == "early_exit" for r in results) / len(qs)
    note = note.format(calls=calls, early=early)
    fuses = tuple(members)
    row = DemoRow(name, scored.row(), time.perf_counter() - start, note=note, fuses=fuses,
                  below=against_best(ctx, fuses, scored.predictions))  # fmt: skip
    return row, calls


def _baseline_row(ctx: DemoContext, members: list[str], calls: float, what: str) -> DemoRow:
    start = time.perf_counter()
    k = math.ceil(calls - 1e-9)
    picked, ties = sampled_majority(ctx, budget(ctx, members, k))
    scored = zoo.score(ctx.questions, picked)
    note = f"same budget as {what}: {k} sampled calls >= {calls:.1f}; {ties} ties"
    return DemoRow(f"majority of {k} sampled", scored.row(), time.perf_counter() - start, "baseline", note)


def demo_rows(ctx: DemoContext) -> list[DemoRow]:
    members = [m for m in zoo.names() if m in ctx.results] or zoo.names()
    if len(members) < 2:
        return []  # nothing to exchange with one model
    for m in members:
        ctx.best_member([m])  # evaluates any member not evaluated yet
    rows = []
    eot = zoo_eot(members, ctx.member, max_rounds=EOT_ROUNDS)
    note = f"{len(members)} agents, memory, {EOT_ROUNDS} rounds: {{calls:.1f}} calls/question, {{early:.0%}} early exit"
    row, calls = _fusion_row(ctx, "exchange: EoT (zoo members)", eot, members, note)
    rows += [row, _baseline_row(ctx, members, calls, "EoT")]

    rows += moa_rows(ctx)
    return rows


def moa_rows(ctx: DemoContext) -> list[DemoRow]:
    """The MoA row (its configuration chosen on the validation split) and its same-budget majority of as
    many samples of the members it fuses."""
    proposers = list(MOA_PROPOSERS)
    fused = list(dict.fromkeys([*proposers, MOA_AGGREGATOR]))
    ctx.best_member(fused)  # evaluates any member not evaluated yet
    moa = zoo_moa(proposers, MOA_AGGREGATOR, ctx.member, layers=MOA_LAYERS)
    layers = f"{MOA_LAYERS} layer{'s' * (MOA_LAYERS > 1)}"
    note = (
        f"{len(proposers)} proposers ({', '.join(proposers)}) x {layers}, aggregator {MOA_AGGREGATOR}, "
        f"chosen on the validation split: {{calls:.1f}} calls/question"
    )
    row, calls = _fusion_row(ctx, "exchange: MoA (zoo members)", moa, fused, note)
    return [row, _baseline_row(ctx, fused, calls, f"MoA, of its {len(fused)} members")]
