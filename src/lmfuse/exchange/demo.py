"""Demo rows: EoT over the zoo members (in-process ``hf`` backends) with its number of calls, beside a
majority vote of the same members' own answers (one greedy call each: with greedy decoding, more calls
would only repeat them, so this is the vote at EoT's budget or below)."""

from __future__ import annotations

import time

from lmfuse import zoo
from lmfuse.demo import DemoContext, DemoRow
from lmfuse.exchange.consensus import majority
from lmfuse.exchange.zoo_agents import solve_all, zoo_eot


def demo_rows(ctx: DemoContext) -> list[DemoRow]:
    members = [m for m in zoo.names() if m in ctx.results] or zoo.names()
    if len(members) < 2:
        return []  # nothing to exchange with one model
    qs = ctx.questions
    rows = []
    start = time.perf_counter()
    results = solve_all(zoo_eot(members, ctx.member), [q.prompt for q in qs], [q.id for q in qs])
    seconds = time.perf_counter() - start
    calls = sum(r.calls for r in results)
    early = sum(r.stop == "early_exit" for r in results)
    scored = zoo.score(qs, [r.answer or "" for r in results], seconds)
    note = (
        f"{len(members)} agents, memory, 3 rounds: {calls / len(qs):.1f} calls/question, "
        f"{early / len(qs):.0%} early exit; zoo models cannot read peers' lines (README)"
    )
    rows.append(DemoRow("exchange: EoT (zoo members)", scored.row(), seconds, note=note))
    if all(m in ctx.results for m in members):
        start = time.perf_counter()
        preds = [[ctx.results[m].predictions[i] for m in members] for i in range(len(qs))]
        voted = zoo.score(qs, [majority(p) or "" for p in preds], time.perf_counter() - start)
        note = f"majority of the members' answers: {len(members):.1f} calls/question"
        rows.append(DemoRow("exchange: majority vote", voted.row(), voted.seconds, note=note))
    return rows
