"""The benchmark scripts run in their smoke modes and report what they claim to."""

import importlib.util
import math
from pathlib import Path

import pytest

BENCH = Path(__file__).parents[2] / "benchmarks" / "moe"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"moe_bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_layer_benchmark_smoke(capsys):
    report = load("run").main(["--smoke"])
    (result,) = report["results"]
    for mode in ("fwd", "fwd_bwd"):
        row = result[mode]
        assert set(row) == {"floor", "lmfuse", "lmfuse-grouped", "lmfuse-loop", "hf-mixtral", "einsum"}
        assert row["floor"]["ratio"] == 1.0
        assert all(math.isfinite(v["ratio"]) and v["ratio"] > 0 for v in row.values())
        assert row["hf-mixtral"]["vs_hf"] == 1.0
    assert "fwd_bwd includes dx" in report["statistic"]
    assert "| 128, 32, 4, 64 | fwd |" in capsys.readouterr().out


@pytest.mark.slow
def test_build_benchmark_smoke_lmfuse_side():
    report = load("build_vs_mergekit").main(["--smoke", "--experts", "2"])
    assert report["lmfuse"]["seconds"] > 0 and report["lmfuse"]["peak_rss_gb"] > 0
    assert "total parameters" in report["lmfuse"]["stdout"]
