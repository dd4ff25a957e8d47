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


def test_zoo_eval_prints_no_loading_bars_and_transformers_warnings_are_off(tmp_path):
    """Before issue 16 every model load drew a "Loading weights" bar, and generating past the zoo's 64
    training positions (EoT's qa_lines prompts in the demo) printed transformers' max-length reminder,
    a logger warning. The zoo models use RoPE (no position table), so lmfuse lets them run past 64
    positions (README) and keeps transformers at verbosity ERROR."""
    code = PROBE.replace("sys.exit(code)", "import transformers.utils.logging as L; "
                         "print('VERBOSITY=%d' % L.get_verbosity(), file=sys.stderr); sys.exit(code)")  # fmt: skip
    env = {**os.environ, "PYTHONPATH": SRC, "HF_HUB_OFFLINE": "1"}
    for var in ("HF_HUB_DISABLE_PROGRESS_BARS", "TRANSFORMERS_VERBOSITY"):
        env.pop(var, None)
    argv = ["zoo", "eval", "base", "--per-op", "1"]
    proc = subprocess.run([sys.executable, "-c", code.format(argv=argv)], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "questions" in proc.stdout and "Loading weights" not in proc.stderr
    assert "VERBOSITY=40" in proc.stderr  # logging.ERROR: warnings such as the max-length reminder are off
