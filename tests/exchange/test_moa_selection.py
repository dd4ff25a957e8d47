"""The demo's MoA configuration is the one ``benchmarks/demo/moa_selection.py`` picked on the zoo's
validation split, by its stated rule."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from lmfuse import zoo
from lmfuse.exchange import demo

ROOT = Path(__file__).resolve().parents[2]
RECORD = ROOT / "benchmarks" / "demo" / "moa_selection.json"


def _script():
    spec = importlib.util.spec_from_file_location(
        "moa_selection", ROOT / "benchmarks" / "demo" / "moa_selection.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_rule_prefers_accuracy_then_fewer_calls_then_the_first_listed():
    pick = _script().pick
    rows = [
        {"name": "a", "calls": 6.0, "accuracy": {"all": 0.70}},
        {"name": "b", "calls": 11.0, "accuracy": {"all": 0.75}},
        {"name": "c", "calls": 7.0, "accuracy": {"all": 0.75}},
        {"name": "d", "calls": 7.0, "accuracy": {"all": 0.75}},
    ]
    assert pick(rows)["name"] == "c"


def test_candidates_are_every_aggregator_proposer_set_and_depth():
    script = _script()
    members = ["base", "add", "sub", "mul", "generalist"]
    val = {"base": 0.6, "add": 0.7, "sub": 0.5, "mul": 0.4, "generalist": 0.65}
    cands = script.candidates(members, val)
    assert len(cands) == len(members) * 2 * len(script.LAYERS)
    top = [c for c in cands if c["proposer_set"] == "top3"]
    assert all(c["proposers"] == ["base", "add", "generalist"] for c in top)  # the 3 best, zoo order
    assert all(c["calls"] == c["layers"] * len(c["proposers"]) + 1 for c in cands)


def test_the_demo_uses_the_configuration_picked_on_the_validation_split():
    record = json.loads(RECORD.read_text(encoding="utf-8"))
    assert record["split"] == "zoo.validation_set(60)" and record["questions"] == len(zoo.validation_set())
    assert len(record["rows"]) == len(
        _script().candidates(zoo.names(), {m: v["all"] for m, v in record["members"].items()})
    )
    chosen = _script().pick(record["rows"])
    assert chosen == record["pick"]
    assert (chosen["aggregator"], tuple(chosen["proposers"]), chosen["layers"]) == (
        demo.MOA_AGGREGATOR, demo.MOA_PROPOSERS, demo.MOA_LAYERS,
    )  # fmt: skip


def test_selection_smoke(tmp_path, capsys):
    out = tmp_path / "sel.json"
    assert _script().main(["--per-op", "1", "--smoke", "--json", str(out)]) == 0
    record = json.loads(out.read_text(encoding="utf-8"))
    assert record["questions"] == 3 and len(record["rows"]) == 2
    assert record["pick"] in record["rows"] and "<- picked" in capsys.readouterr().out
