"""``lmfuse exchange`` / ``lmfuse moa`` / ``lmfuse serve`` from the command line, on the shipped examples."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from lmfuse.cli import main
from lmfuse.core.config import load_config
from lmfuse.exchange import runner
from lmfuse.exchange.config import EoTConfig
from lmfuse.exchange.eot import EoT

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "exchange"
QUESTIONS = EXAMPLES / "questions.jsonl"


def rows(path: Path) -> dict[str, dict]:
    return {r["id"]: r for r in map(json.loads, path.read_text().splitlines())}


def test_eot_example_runs_resumes_and_refuses_another_recipe(tmp_path, capsys):
    out, tr = tmp_path / "r.jsonl", tmp_path / "t.jsonl"
    args = [
        "exchange",
        "--config",
        str(EXAMPLES / "eot_scripted.yaml"),
        "--input",
        str(QUESTIONS),
        "-o",
        str(out),
    ]
    assert main([*args, "--transcript", str(tr), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "answered 3 of 3 (0 already" in printed and "accuracy 1.000 on 3" in printed
    assert "calls 18," in printed and "early_exit 1, majority 1, unanimous 1" in printed
    got = rows(out)
    assert (got["q1"]["stop"], got["q1"]["calls"], got["q1"]["answer"]) == ("early_exit", 3, "85")
    assert (got["q2"]["stop"], got["q2"]["rounds"], got["q2"]["answer"]) == ("unanimous", 2, "75")
    assert (got["q3"]["stop"], got["q3"]["rounds"], got["q3"]["correct"]) == ("majority", 3, True)
    assert len(tr.read_text().splitlines()) == 18
    assert (tmp_path / "r.jsonl.recipe.yaml").read_text().startswith("# lmfuse ")

    # Resume: nothing left to do; then a crash mid-write (torn last line, q3 missing) is repaired.
    assert main([*args, "--no-progress"]) == 0
    assert "answered 0 of 3 (3 already" in capsys.readouterr().out
    lines = out.read_text().splitlines()
    kept = [line for line in lines if json.loads(line)["id"] != "q3"]
    out.write_text("\n".join(kept) + "\n" + '{"id": "q3", "ques')
    assert main([*args, "--no-progress"]) == 0
    assert "answered 1 of 3 (2 already" in capsys.readouterr().out
    assert sorted(rows(out)) == ["q1", "q2", "q3"]

    other = tmp_path / "other.yaml"
    other.write_text((EXAMPLES / "eot_scripted.yaml").read_text().replace("max_rounds: 3", "max_rounds: 4"))
    assert (
        main(["exchange", "--config", str(other), "--input", str(QUESTIONS), "-o", str(out), "--no-progress"])
        == 2
    )
    assert "different recipe" in capsys.readouterr().err
    assert (
        main(
            [
                "exchange",
                "--config",
                str(other),
                "--input",
                str(QUESTIONS),
                "-o",
                str(out),
                "--overwrite",
                "--no-progress",
            ]
        )
        == 0
    )


def test_moa_example_flags_the_failed_proposer(tmp_path, capsys):
    out = tmp_path / "m.jsonl"
    cmd = ["moa", "--config", str(EXAMPLES / "moa_scripted.yaml"), "--input", str(QUESTIONS), "-o", str(out)]
    assert main([*cmd, "--no-progress"]) == 1  # calls failed: the exit code says so
    captured = capsys.readouterr()
    assert (
        "failed calls 3" in captured.out
        and "error: 3 calls failed after retries in 3 questions" in captured.err
    )
    q1 = rows(out)["q1"]
    assert q1["failures"] == ["layer 0 proposer P3: HTTP 503: simulated outage"]
    assert q1["answers"] == [["85", "75", None], ["85", "85"], ["85"]] and q1["calls"] == 6
    # issue 15 item 3: a re-run retries the questions whose calls failed instead of skipping them
    assert main([*cmd, "--no-progress"]) == 1
    captured = capsys.readouterr()
    assert "answered 3 of 3 (0 already in" in captured.out
    assert len(out.read_text().splitlines()) == 3  # replaced, not appended twice


def test_bad_inputs_are_reported_with_their_place(tmp_path, capsys):
    bad = tmp_path / "q.jsonl"
    bad.write_text('{"id": "a", "question": "x"}\nnot json\n{"id": "a", "question": "y"}\n{"q": 1}\n')
    cmd = [
        "exchange",
        "--config",
        str(EXAMPLES / "eot_scripted.yaml"),
        "--input",
        str(bad),
        "-o",
        str(tmp_path / "o"),
    ]
    assert main(cmd) == 2
    err = capsys.readouterr().err
    assert (
        f"{bad}:2:1: not valid JSON" in err
        and "duplicate id 'a'" in err
        and f"{bad}:4: expected an object" in err
    )
    broken = tmp_path / "c.yaml"
    broken.write_text("backends: {}\nagents:\n  - {name: A, backend: nowhere, max_token: 3}\n")
    assert (
        main(["exchange", "--config", str(broken), "--input", str(QUESTIONS), "-o", str(tmp_path / "o")]) == 2
    )
    err = capsys.readouterr().err
    assert "did you mean 'max_tokens'" in err and "at least 2 agents" not in err  # unknown field stops first


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_serve_command_and_the_openai_example(tmp_path):
    from lmfuse.testing import save_tiny

    model_dir = save_tiny(tmp_path / "tiny", seed=5)
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    names = ["--name", "base", "--name", "add", "--name", "sub", "--name", "mul"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "lmfuse", "serve", *[str(model_dir)] * 4, *names, "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/v1"
        deadline = time.monotonic() + 60
        while True:
            try:
                listed = httpx.get(f"{url}/models", timeout=1).json()
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read().decode()
                assert time.monotonic() < deadline, "lmfuse serve did not start"
                time.sleep(0.3)
        assert [m["id"] for m in listed["data"]] == ["base", "add", "sub", "mul"]
        config = load_config(EoTConfig, EXAMPLES / "eot_openai.yaml")
        config.backends["local"].base_url = url  # the example's port 8000, moved to a free one
        out = tmp_path / "http.jsonl"
        summary = runner.run_questions(EoT(config), runner.zoo_questions(2), out)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert summary.answered == 6 and summary.failed_calls == 0 and summary.calls >= 6 * 4
    assert summary.prompt_tokens > 0 and summary.completion_tokens > 0


def test_missing_api_key_fails_before_anything_is_written(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("LMFUSE_NO_SUCH_KEY", raising=False)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "backends:\n  api: {kind: openai, base_url: 'http://127.0.0.1:9/v1', api_key_env: LMFUSE_NO_SUCH_KEY}\n"
        "  local: {kind: hf}\n"
        "agents:\n  - {name: A, backend: api, model: m}\n  - {name: B, backend: api, model: m}\n"
    )
    out = tmp_path / "o.jsonl"
    assert main(["exchange", "--config", str(cfg), "--input", str(QUESTIONS), "-o", str(out)]) == 2
    assert "LMFUSE_NO_SUCH_KEY is not set" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "o.jsonl.recipe.yaml").exists()
    cfg.write_text(cfg.read_text().replace("backend: api, model: m}\n", "backend: local, model: m}\n", 1))
    assert main(["exchange", "--config", str(cfg), "--input", str(QUESTIONS), "-o", str(out)]) == 2
    assert "only openai backends take a model per agent" in capsys.readouterr().err


def test_zoo_example_in_process(tmp_path, capsys):
    from lmfuse import zoo

    out = tmp_path / "z.jsonl"
    cmd = ["exchange", "--config", str(EXAMPLES / "eot_zoo.yaml"), "--zoo-questions", "2", "-o", str(out)]
    assert main([*cmd, "--no-progress"]) == 0
    assert "answered 6 of 6" in capsys.readouterr().out
    got = rows(out)
    assert sorted(got) == sorted(q.id for q in zoo.eval_set(2))
    for r in got.values():
        assert r["calls"] == 5 * r["rounds"] and r["rounds"] in (1, 2)
        assert (r["stop"] == "early_exit") == (r["rounds"] == 1)
        assert r["correct"] == (r["answer"] == r["expected"])
