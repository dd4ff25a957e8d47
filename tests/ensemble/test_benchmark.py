"""The benchmark's smoke mode runs end to end and reports every section."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

RUN = Path(__file__).resolve().parents[2] / "benchmarks" / "ensemble" / "run.py"


@pytest.mark.slow
def test_benchmark_smoke(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("ensemble_bench", RUN)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "r.json"
    assert bench.main(["--smoke", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert [t["batch"] for t in r["throughput"]] == [1, 8]
    assert all(t["ratio_lmfuse"] > 0 and t["ratio_hf"] > 0 for t in r["throughput"])
    assert r["vs_naive"]["token_agreement"] == 1.0  # cached and naive decode the same tokens
    assert r["quality"] and "ratio to ideal" in capsys.readouterr().out


@pytest.mark.slow
def test_serving_benchmark_smoke(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("serving_bench", RUN.parent / "serving.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "r.json"
    assert bench.main(["--smoke", "--k", "2,6", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert [(s["members"], s["batch"], s["k"]) for s in r["speculative"]] == [
        (m, b, k) for m in (2, 4, "bytes") for b in (1, 8) for k in (2, 6)
    ]
    assert [s["byte_aligned"] for s in r["speculative"]] == [False] * 8 + [True] * 4
    assert all(s["identical"] and 1 <= s["mean_accepted"] <= s["k"] for s in r["speculative"])
    assert [s["speculate"] for s in r["remote"]] == [0, 2, 6, 0, 2, 6] and all(
        s["identical"] for s in r["remote"]
    )
    assert all(s["same_text"] == 1.0 for s in r["truncation"] if s["K"] == 5000)  # full K: exact
    assert "HTTP calls per token" in capsys.readouterr().out
