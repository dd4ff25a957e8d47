"""Issue 16, item 2: replies cut at max_tokens are recorded (finish_reason), counted and warned about."""

from __future__ import annotations

import json

import pytest

from lmfuse import zoo
from lmfuse.backends.hf import HFBackend
from lmfuse.core.config import from_dict
from lmfuse.exchange import runner
from lmfuse.exchange.config import EoTConfig, MoAConfig
from lmfuse.exchange.eot import EoT
from lmfuse.exchange.moa import MoA

QUESTION = "Q: 37+48= A:"


@pytest.fixture(scope="module")
def backends():
    return {name: HFBackend(*zoo.load(name), name=name) for name in ("add", "generalist")}


def eot_config(cap_add: int) -> EoTConfig:
    agents = [
        {"name": "A", "backend": "add", "prompt_format": "qa_lines", "max_tokens": cap_add},
        {"name": "G", "backend": "generalist", "prompt_format": "qa_lines", "max_tokens": zoo.MAX_NEW_TOKENS},
    ]
    kinds = {
        "add": {"kind": "hf", "model": "zoo:add"},
        "generalist": {"kind": "hf", "model": "zoo:generalist"},
    }
    return from_dict(EoTConfig, {"backends": kinds, "agents": agents, "max_rounds": 2, "early_exit": False})


def test_a_reply_cut_at_max_tokens_is_flagged_in_turns_result_and_summary(backends, tmp_path):
    full = EoT(eot_config(zoo.MAX_NEW_TOKENS), backends).run(QUESTION)
    assert full.truncated == 0 and all(t.finish_reason == "stop" for t in full.turns)
    assert full.warnings == []
    cut = EoT(eot_config(1), backends).run(QUESTION)
    a_turns = [t for t in cut.turns if t.agent == "A"]
    assert all(t.finish_reason == "length" and t.completion_tokens == 1 for t in a_turns)
    assert all(t.finish_reason == "stop" for t in cut.turns if t.agent == "G")
    assert cut.truncated == len(a_turns) == 2
    assert cut.summary()["truncated"] == 2
    assert any("max_tokens" in w and "A" in w for w in cut.warnings)

    out, tr = tmp_path / "r.jsonl", tmp_path / "t.jsonl"
    items = [runner.Item("q1", QUESTION, "85"), runner.Item("q2", "Q: 12+30= A:", "42")]
    s = runner.run_questions(EoT(eot_config(1), backends), items, out, tr)
    assert s.truncated == 4  # 2 rounds x agent A x 2 questions
    assert all(json.loads(line)["truncated"] == 2 for line in out.read_text().splitlines())
    reasons = [json.loads(line)["finish_reason"] for line in tr.read_text().splitlines()]
    assert reasons.count("length") == 4 and reasons.count("stop") == 4


def test_moa_aggregator_cut_short_sets_the_results_finish_reason(backends):
    cfg = {
        "backends": {"add": {"kind": "hf", "model": "zoo:add"}},
        "layers": [
            [{"name": "p", "backend": "add", "prompt_format": "qa_lines", "max_tokens": zoo.MAX_NEW_TOKENS}]
        ],
        "aggregator": {"name": "agg", "backend": "add", "prompt_format": "qa_lines", "max_tokens": 1},
    }
    r = MoA(from_dict(MoAConfig, cfg), {"add": backends["add"]}).run(QUESTION)
    assert r.finish_reason == "length" and r.truncated == 1 and r.summary()["finish_reason"] == "length"
    assert len(r.warnings) == 1 and "agg" in r.warnings[0]


def test_cli_warns_about_truncated_replies(tmp_path, capsys):
    from lmfuse.cli import main

    recipe = tmp_path / "eot.yaml"
    recipe.write_text(
        "backends: {add: {kind: hf, model: 'zoo:add'}, gen: {kind: hf, model: 'zoo:generalist'}}\n"
        "agents:\n"
        "  - {name: A, backend: add, prompt_format: qa_lines, max_tokens: 1}\n"
        f"  - {{name: G, backend: gen, prompt_format: qa_lines, max_tokens: {zoo.MAX_NEW_TOKENS}}}\n"
        "max_rounds: 1\nearly_exit: false\n"
    )
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"id": "q1", "question": QUESTION, "answer": "85"}) + "\n")
    args = ["exchange", "--config", str(recipe), "--input", str(questions), "-o", str(tmp_path / "o.jsonl")]
    assert main([*args, "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "warning: 1 replies were cut at max_tokens" in err
