"""The graft demo rows: training text excludes held-out questions; rows come out for the zoo base."""

from __future__ import annotations

import pytest

from lmfuse import zoo
from lmfuse.demo import DemoContext
from lmfuse.graft import demo as graft_demo
from lmfuse.zoo.questions import held_out_pairs


def test_training_text_never_contains_a_held_out_question(tmp_path):
    lines = graft_demo.write_training_text(tmp_path / "t.txt", 3000).read_text().splitlines()
    held = {q.text for q in zoo.eval_set()}
    assert len(lines) == 3000 and not held & set(lines)
    assert len(held_out_pairs()) == len(held)
    assert {line.split()[1][:-1].strip("0123456789")[:1] for line in lines} == {"+", "-", "*"}


@pytest.mark.slow
@pytest.mark.skipif("base" not in zoo.names(), reason="zoo base model not committed yet")
def test_demo_rows_on_the_zoo(monkeypatch):
    monkeypatch.setattr(graft_demo, "STEPS", 3)
    rows = graft_demo.demo_rows(DemoContext(questions=zoo.eval_set(3)))
    assert [r.name.split(":")[0] for r in rows] == ["graft", "graft"]
    assert "3 training steps" in rows[1].name
    for row in rows:
        assert set(row.accuracy) == {"all", "add", "sub", "mul"} and 0 <= row.accuracy["all"] <= 1
