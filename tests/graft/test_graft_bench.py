"""The graft benchmark's smoke mode runs end to end (lmfuse vs the copy floor; mergekit if installed)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

RUN = Path(__file__).parents[2] / "benchmarks" / "graft" / "run.py"


@pytest.mark.slow
def test_benchmark_smoke(tmp_path, capsys):
    # in-process: `lmfuse graft dus` and the copy it measures are still separate processes (/usr/bin/time)
    spec = importlib.util.spec_from_file_location("graft_bench", RUN)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "r.json"
    argv = ["--smoke", "--mergekit", "", "--workdir", str(tmp_path / "w"), "--json", str(out)]
    assert bench.main(argv) == 0, capsys.readouterr().out[-2000:]
    (case,) = json.loads(out.read_text())["cases"]
    assert case["lmfuse"]["exit"] == 0 and case["copy"]["exit"] == 0
    assert case["layers"] == "4->6" and case["output_bytes"] > case["source_bytes"]
    assert case["lmfuse"]["peak_rss_mb"] > 0 and case["lmfuse/copy wall"] > 0
