"""Merge search (CMA-ES on the zoo and on a JSONL), the demo rows, and the benchmark's smoke mode."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import yaml

from lmfuse.errors import InputDataError
from lmfuse.merge.recipe import recipe_from_dict
from lmfuse.merge.search import SearchConfig, search

SPECIALISTS = {
    "merge_method": "ties",
    "base_model": "zoo:base",
    "models": [
        {"model": f"zoo:{n}", "parameters": {"weight": 1.0, "density": 0.5}} for n in ("add", "sub", "mul")
    ],
}


def test_search_on_the_zoo_returns_a_loadable_recipe_at_least_as_good_as_the_start():
    result = search(recipe_from_dict(SPECIALISTS), SearchConfig(budget=4, per_op=2, seed=1))
    assert result.evaluations == 4 and len(result.history) == 4
    assert result.best_score == max(result.history) >= result.start_score == result.history[0]
    again = recipe_from_dict(yaml.safe_load(result.best_yaml))
    assert again.merge_method == "ties" and len(again.models) == 3
    assert "6 zoo held-out questions" in result.eval_description


def test_search_per_layer_writes_gradients_and_reads_jsonl(tmp_path):
    data = tmp_path / "qa.jsonl"
    data.write_text(
        "\n".join(json.dumps({"prompt": f"Q: {a}+1= A:", "answer": a + 1}) for a in range(4)) + "\n"
    )
    r = recipe_from_dict({**SPECIALISTS, "merge_method": "task_arithmetic",
                          "models": [{"model": "zoo:add", "parameters": {"weight": 0.5}}]})  # fmt: skip
    result = search(r, SearchConfig(budget=3, per_layer=True, eval_file=str(data)))
    weights = result.best_recipe.models[0].parameters["weight"]
    if result.best_score > result.start_score:
        assert isinstance(weights, list) and len(weights) == 4  # one entry per layer of zoo:base
    assert "4 prompts" in result.eval_description
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": 1}\n')
    with pytest.raises(InputDataError, match="bad.jsonl:1"):
        search(r, SearchConfig(budget=2, eval_file=str(bad)))


def test_demo_rows(monkeypatch):
    from lmfuse import zoo
    from lmfuse.demo import DemoContext
    from lmfuse.merge import demo

    monkeypatch.setattr(
        demo, "SEARCH_BUDGET", 2
    )  # restored afterwards: the recorded demo uses the real budget
    ctx = DemoContext(questions=zoo.eval_set(4))
    rows = demo.demo_rows(ctx)
    assert [r.name for r in rows] == [f"merge: {m}" for m in demo.RECIPES] + ["merge: ties, searched"]
    assert all(0.0 <= r.accuracy["all"] <= 1.0 for r in rows)


@pytest.mark.slow
def test_benchmark_smoke(tmp_path, capsys):
    # in-process: the three `lmfuse merge` runs it measures are still separate processes under /usr/bin/time
    spec = importlib.util.spec_from_file_location(
        "merge_bench", Path(__file__).parents[2] / "benchmarks" / "merge" / "run.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "r.json"
    argv = ["--smoke", "--mergekit", "", "--workdir", str(tmp_path / "w"), "--json", str(out)]
    assert bench.main(argv) == 0, capsys.readouterr().out[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert [r["method"] for r in rows] == ["linear", "ties", "dare_ties"]
    assert all(r["lmfuse"]["exit"] == 0 and r["lmfuse"]["peak_rss_mb"] > 0 for r in rows)
    kept = rows[2]["stats"]["lmfuse"]["changed_fraction"]
    assert 0.3 < kept < 0.9  # density 0.5 of two models, then sign election
