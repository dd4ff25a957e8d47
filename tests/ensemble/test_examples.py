"""The ensemble example script runs and its ensembles score on the zoo."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from lmfuse import zoo

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "ensemble" / "zoo_ensemble.py"


def test_zoo_ensemble_example(capsys):
    spec = importlib.util.spec_from_file_location("zoo_ensemble_example", SCRIPT)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    scores = example.main(["--per-op", "10"])
    assert set(scores) == {"add+sub+mul", "base+generalist"}
    out = capsys.readouterr().out
    assert "shared tokenizer" in out and "byte-aligned tokenizers" in out
    # each specialist is strong on one operation only: together they beat every one of them
    questions = zoo.eval_set(10)
    alone = [
        zoo.evaluate(zoo.hf_generate_fn(*zoo.load(m)), questions).accuracy for m in ("add", "sub", "mul")
    ]
    assert scores["add+sub+mul"] > max(alone)
