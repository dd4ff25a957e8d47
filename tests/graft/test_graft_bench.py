"""The graft benchmark's smoke mode runs end to end (lmfuse vs the copy floor; mergekit if installed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

RUN = Path(__file__).parents[2] / "benchmarks" / "graft" / "run.py"


@pytest.mark.slow
def test_benchmark_smoke(tmp_path):
    out = tmp_path / "r.json"
    cmd = [
        sys.executable,
        str(RUN),
        "--smoke",
        "--mergekit",
        "",
        "--workdir",
        str(tmp_path / "w"),
        "--json",
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (case,) = json.loads(out.read_text())["cases"]
    assert case["lmfuse"]["exit"] == 0 and case["copy"]["exit"] == 0
    assert case["layers"] == "4->6" and case["output_bytes"] > case["source_bytes"]
    assert case["lmfuse"]["peak_rss_mb"] > 0 and case["lmfuse/copy wall"] > 0
