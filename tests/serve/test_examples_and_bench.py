"""The shipped serve.yaml parses as documented, responses are not delayed by Nagle's algorithm, and the
load test's smoke run loses no request while a member is killed."""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import httpx

from lmfuse.backends.scripted import ScriptedBackend
from lmfuse.core.config import load_yaml
from lmfuse.serve.app import create_app
from lmfuse.serve.config import parse
from lmfuse.serve.server import ServerThread

ROOT = Path(__file__).resolve().parents[2]


def test_example_serve_yaml_is_valid():
    cfg = parse(load_yaml(ROOT / "examples/serve/serve.yaml"))
    assert {raw["method"] for raw in cfg.models.values()} == {"single", "vote", "moa", "eot", "ensemble"}
    assert cfg.backends["remote"].kind == "openai" and cfg.server.limits.max_queue == 256


def test_responses_are_not_held_back_by_delayed_acks():
    """Regression: without TCP_NODELAY every response on a kept-alive connection waited ~40 ms."""
    with ServerThread(create_app({"m": ScriptedBackend(lambda r: "x")})) as s, httpx.Client() as c:
        url = s.base_url.removesuffix("/v1") + "/health"
        c.get(url)
        times = []
        for _ in range(15):
            t = time.perf_counter()
            c.get(url)
            times.append(time.perf_counter() - t)
    assert statistics.median(times) < 0.03, times


def test_load_test_smoke_loses_nothing(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks" / "serve"))
    try:
        import run as bench
    finally:
        sys.path.pop(0)
    # the mixed greedy/sampled part loads a model; its property is tested in test_logprobs.py in-process
    report = bench.main(["--smoke", "--parts", "vote", "--json", str(tmp_path / "r.json")])
    vote = report["vote"]
    assert vote["vote"]["lost"] == 0 and vote["direct_member"]["lost"] == 0
    assert vote["vote"]["answer"] > 0 and vote["vote_after_kill"]["answer"] > 0  # quorum answers keep flowing
    assert vote["after_kill_answers_with_a_failed_member"] == vote["vote_after_kill"]["answer"]
    # the no-lmfuse baseline (each request calls the three members itself) and the client-count sweep
    assert vote["fanout_baseline"]["lost"] == 0 and vote["fanout_baseline"]["answer"] > 0
    assert [row["clients"] for row in vote["sweep"]] == [2, 8]
    for row in vote["sweep"]:
        assert row["vote"]["lost"] == 0 and row["fanout_baseline"]["lost"] == 0
        assert row["vote"]["cpu_ms_per_request"]["lmfuse_server"] > 0  # the server did the fusing


def test_benchmark_json_is_never_replaced_without_overwrite(tmp_path):
    """A benchmark's --json that exists is refused before any work: one line, exit 2, the file as it was."""
    import subprocess

    old = tmp_path / "serve.json"
    old.write_text('{"kept": true}\n')
    cmd = [sys.executable, str(ROOT / "benchmarks" / "serve" / "run.py"), "--smoke", "--json", str(old)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert f"output {old} already exists; pass --overwrite" in done.stderr.splitlines()[-1]
    assert old.read_text() == '{"kept": true}\n'
