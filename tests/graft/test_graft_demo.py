"""The graft demo rows: training text excludes held-out questions; rows come out for the zoo base."""

from __future__ import annotations

import json

import pytest

from lmfuse import zoo
from lmfuse.demo import DemoContext
from lmfuse.graft import demo as graft_demo
from lmfuse.zoo.questions import held_out_pairs


def test_training_text_never_contains_a_held_out_question(tmp_path):
    records = graft_demo.write_training_jsonl(tmp_path / "t.jsonl", 3000).read_text().splitlines()
    lines = [r["prompt"] + r["completion"] for r in map(json.loads, records)]
    held = {q.text for q in zoo.eval_set()}
    assert len(lines) == 3000 and not held & set(lines)
    assert len(held_out_pairs()) == len(held)
    assert {line.split()[1][:-1].strip("0123456789")[:1] for line in lines} == {"+", "-", "*"}


def test_training_records_learn_the_answer_only(tmp_path):
    lines = graft_demo.write_training_jsonl(tmp_path / "t.jsonl", 300).read_text().splitlines()
    records = [json.loads(line) for line in lines]
    held = {q.prompt for q in zoo.eval_set()}
    assert len(records) == 300 and not held & {r["prompt"] for r in records}
    texts = [q.text for q in graft_demo.training_questions(300)]
    assert [r["prompt"] + r["completion"] for r in records] == texts  # the same lines, split
    assert all(r["prompt"].endswith("A:") for r in records)


@pytest.mark.slow
@pytest.mark.skipif("base" not in zoo.names(), reason="zoo base model not committed yet")
def test_demo_rows_on_the_zoo(monkeypatch, tmp_path):
    monkeypatch.setattr(graft_demo, "STEPS", 3)
    rows = graft_demo.demo_rows(DemoContext(questions=zoo.eval_set(3), plot_dir=tmp_path))
    assert [r.name.split(":")[0] for r in rows] == ["graft", "graft", "base + 3 training steps"]
    assert "3 training steps" in rows[1].name and [r.kind for r in rows] == ["fusion", "fusion", "baseline"]
    assert rows[0].fuses == rows[1].fuses == ("base",)
    for row in rows:
        assert set(row.accuracy) == {"all", "add", "sub", "mul"} and 0 <= row.accuracy["all"] <= 1
    plot = tmp_path / graft_demo.PLOT
    assert rows[1].files == {"loss curve": str(plot)} and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
