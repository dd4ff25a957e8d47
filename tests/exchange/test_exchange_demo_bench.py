"""EoT over the zoo members (demo rows) and the benchmark's smoke mode."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from lmfuse import zoo
from lmfuse.demo import DemoContext
from lmfuse.exchange import demo
from lmfuse.exchange.consensus import majority
from lmfuse.exchange.demo import demo_rows
from lmfuse.exchange.eot import EoT
from lmfuse.exchange.zoo_agents import solve_all, zoo_eot

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ctx():
    ctx = DemoContext(questions=zoo.eval_set(4))
    for name in zoo.names():
        ctx.results[name] = zoo.evaluate(zoo.hf_generate_fn(*ctx.member(name)), ctx.questions)
    return ctx


@pytest.fixture(scope="module")
def demo_run(ctx):
    """The demo rows, and every ``solve_all`` the demo made on the way (recorded, not recomputed)."""
    solved = []

    def recording(solver, prompts, ids):
        results = solve_all(solver, prompts, ids)
        solved.append((solver, list(prompts), list(ids), results))
        return results

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(demo, "solve_all", recording)
        rows = demo_rows(ctx)
    return rows, solved


def test_round_zero_equals_each_members_own_answers(ctx, demo_run):
    members = zoo.names()
    qs = ctx.questions
    # the demo's EoT run over these questions is zoo_eot(members) with its defaults (3 rounds, memory,
    # early exit): the one this test checks, so it reads that run instead of solving it a second time
    ((eot, prompts, ids, results),) = [s for s in demo_run[1] if isinstance(s[0], EoT)]
    assert eot.config == zoo_eot(members, ctx.member).config
    assert prompts == [q.prompt for q in qs] and ids == [q.id for q in qs]
    for i, r in enumerate(results):
        own = [ctx.results[m].predictions[i] for m in members]
        texts = [ctx.results[m].completions[i] for m in members]
        assert r.answers[0] == own  # the hf backend (batched) answers as zoo.evaluate does
        if r.stop == "early_exit":
            assert r.calls == len(members) and r.answer == own[0]
        else:
            assert r.calls > len(members) and r.rounds >= 2
            # Round 1 (memory): own round-0 solution, then the peers' in agent order, as solved lines.
            for k, t in enumerate(x for x in r.turns if x.round == 1):
                order = [k] + [j for j in range(len(members)) if j != k]
                lines = [f"{qs[i].prompt} {' '.join(texts[j].split())}" for j in order if own[j] is not None]
                assert t.prompt == "\n".join([*lines, qs[i].prompt])


def test_demo_rows(demo_run):
    rows, _ = demo_run
    names = [r.name for r in rows]
    assert names[0] == "exchange: EoT (zoo members)" and names[2] == "exchange: MoA (zoo members)"
    assert names[1].startswith("majority of ") and names[1].endswith(" sampled")
    assert [r.kind for r in rows] == ["fusion", "baseline"] * 2
    assert all(0.0 <= v <= 1.0 for r in rows for v in r.accuracy.values())
    assert all(set(r.accuracy) == {"all", "add", "sub", "mul"} for r in rows)
    assert "calls/question" in rows[0].note and rows[0].fuses == tuple(zoo.names())
    # MoA (configured on the validation split): layers x proposers + the aggregator; the baseline spends
    # as many samples of the same members
    calls = demo.MOA_LAYERS * len(demo.MOA_PROPOSERS) + 1
    assert f"{calls:.1f} calls/question" in rows[2].note and rows[3].name == f"majority of {calls} sampled"
    assert set(rows[2].fuses) == {*demo.MOA_PROPOSERS, demo.MOA_AGGREGATOR}


def test_same_budget_baseline_is_a_majority_of_that_many_samples(ctx):
    from lmfuse.exchange.demo import budget
    from lmfuse.vote.demo import member_samples

    members = zoo.names()
    calls = budget(ctx, members, 7)
    assert sum(calls.values()) == 7 and max(calls.values()) - min(calls.values()) <= 1
    best = max(members, key=lambda m: ctx.results[m].accuracy)
    assert calls[best] == 2  # the extra calls go to the most accurate members first
    sets = [[] for _ in ctx.questions]
    for m, k in calls.items():
        for i, group in enumerate(member_samples(ctx, m, k)):
            sets[i] += [zoo.extract_number(c) for c in group]
    voted = [majority(s) for s in sets]
    from lmfuse.vote.demo import sampled_majority

    picked, _ = sampled_majority(ctx, calls)
    assert [zoo.extract_number(p) for p in picked] == voted


@pytest.mark.slow
def test_benchmark_smoke(tmp_path, capsys):
    out = tmp_path / "bench.json"
    spec = importlib.util.spec_from_file_location(
        "exchange_bench", ROOT / "benchmarks" / "exchange" / "run.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.main(["--smoke", "--json", str(out)])
    assert "calls saved by the early exit" in capsys.readouterr().out
    report = json.loads(out.read_text())
    (w,) = report["waiting"]
    conc, seq = w["concurrent"]["per_round_over_latency"], w["sequential"]["per_round_over_latency"]
    assert 1.0 <= conc < seq / 2  # at least one latency per round; far less than 5 one after another
    assert seq >= 5.0
    e = report["early_exit"]
    assert e["on"]["calls"] <= e["off"]["calls"] and 0.0 <= e["calls_saved"] < 1.0
