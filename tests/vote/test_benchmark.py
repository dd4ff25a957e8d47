"""The vote benchmark's smoke mode runs, and its reference agrees with lmfuse."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("rouge_score")
RUN = Path(__file__).resolve().parents[2] / "benchmarks" / "vote" / "run.py"


def test_benchmark_smoke(tmp_path):
    out = tmp_path / "rows.json"
    done = subprocess.run(
        [sys.executable, str(RUN), "--smoke", "--json", str(out)],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(RUN.parents[2] / "src"), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {r["name"]: r for r in json.loads(out.read_text())}
    assert rows["winners"]["winners_identical"] and rows["winners"]["values_bit_identical"]
    assert rows["long"]["winners_identical"] and rows["long"]["values_bit_identical"]
    assert rows["throughput"]["questions"] == 200
