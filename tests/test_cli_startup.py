"""Issue 16, item 5: the CLI imports only the command it runs; help and vote never import torch."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lmfuse.cli import COMMANDS

SRC = str(Path(__file__).resolve().parents[1] / "src")
PROBE = """
import runpy, sys
sys.argv = ["lmfuse", *{argv!r}]
try:
    runpy.run_module("lmfuse", run_name="__main__")
except SystemExit as exc:
    code = exc.code
heavy = sorted(m for m in ("torch", "transformers", "sentence_transformers") if m in sys.modules)
print("HEAVY=" + ",".join(heavy), file=sys.stderr)
sys.exit(code)
"""


def run_cli(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run(
        [sys.executable, "-c", PROBE.format(argv=argv)], capture_output=True, text=True, env=env, cwd=cwd,
        timeout=120,
    )  # fmt: skip


def heavy(proc: subprocess.CompletedProcess) -> str:
    return proc.stderr.rsplit("HEAVY=", 1)[1].strip()


def test_help_lists_every_command_without_importing_torch(tmp_path):
    proc = run_cli(["--help"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    for name in COMMANDS:
        assert name in proc.stdout
    assert heavy(proc) == ""


def test_vote_help_and_vote_run_never_import_torch(tmp_path):
    proc = run_cli(["vote", "--help"], tmp_path)
    assert proc.returncode == 0 and "--similarity" in proc.stdout and heavy(proc) == ""
    data = tmp_path / "in.jsonl"
    rows = [{"id": f"q{i}", "candidates": ["the cat sat", "the cat sat down", "a dog"]} for i in range(100)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    for sim in ("char_rouge_l", "word_rouge_l", "answer", "exact"):
        out = tmp_path / f"{sim}.jsonl"
        proc = run_cli(["vote", str(data), "-o", str(out), "--similarity", sim, "--no-progress"], tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert len(out.read_text().splitlines()) == 100 and heavy(proc) == ""


def test_package_import_is_light(tmp_path):
    env = {**os.environ, "PYTHONPATH": SRC}
    code = "import sys, lmfuse, lmfuse.vote, lmfuse.exchange; print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert proc.stdout.strip() == "False", proc.stderr


def test_unknown_command_is_an_error_naming_the_choices(tmp_path):
    proc = run_cli(["vot"], tmp_path)
    assert proc.returncode == 2 and "invalid choice: 'vot'" in proc.stderr and "vote" in proc.stderr


@pytest.mark.parametrize("module", sorted({m for m, _ in COMMANDS.values()}))
def test_table_and_modules_agree(module):
    """Every command a module registers is in the table under that module, and nothing else is."""
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    importlib.import_module(module).add_parser(sub)
    assert set(sub.choices) == {name for name, (m, _) in COMMANDS.items() if m == module}


ZOO_RECIPE = """\
backends: {b: {kind: hf, model: 'zoo:base'}, a: {kind: hf, model: 'zoo:add'},
           s: {kind: hf, model: 'zoo:sub'}, m: {kind: hf, model: 'zoo:mul'}}
agents:
  - {name: B, backend: b, prompt_format: qa_lines, max_tokens: 6}
  - {name: A, backend: a, prompt_format: qa_lines, max_tokens: 6}
  - {name: S, backend: s, prompt_format: qa_lines, max_tokens: 6}
  - {name: M, backend: m, prompt_format: qa_lines, max_tokens: 6}
max_rounds: 2
early_exit: false
"""


def test_exchange_past_the_zoo_context_runs_without_the_max_length_warning(tmp_path):
    """Round 1's qa_lines prompt (4 solved lines + the question) is longer than the zoo's 64 training
    positions: the models (RoPE, no position table) still run — lmfuse gives them the room, documented in
    the README — and neither transformers' reminder nor its per-load "Loading weights" bars are printed
    (before issue 16: one bar per model loaded)."""
    from lmfuse.zoo import load

    model, tok = load("base")
    prompt = "\n".join(["Q: 37+48= A: 85"] * 4 + ["Q: 37+48= A:"])
    assert len(tok(prompt)["input_ids"]) > model.config.max_position_embeddings == 64
    (tmp_path / "eot.yaml").write_text(ZOO_RECIPE)
    q = tmp_path / "q.jsonl"
    q.write_text(json.dumps({"id": "q1", "question": "Q: 37+48= A:", "answer": "85"}) + "\n")
    argv = ["exchange", "--config", "eot.yaml", "--input", str(q), "-o", "o.jsonl", "--transcript", "t.jsonl"]
    proc = run_cli([*argv, "--no-progress"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    turns = [json.loads(line) for line in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert len(turns) == 8 and max(len(tok(t["prompt"])["input_ids"]) for t in turns) > 64
    assert "predefined maximum length" not in proc.stderr and "Loading weights" not in proc.stderr
