"""Demo rows on the zoo."""

from __future__ import annotations

from lmfuse import zoo
from lmfuse.demo import DemoContext
from lmfuse.ensemble.demo import demo_rows


def test_demo_rows_on_the_zoo():
    ctx = DemoContext(questions=zoo.eval_set(3))
    for name in zoo.names():
        model, tok = ctx.member(name)
        ctx.results[name] = zoo.evaluate(zoo.hf_generate_fn(model, tok), ctx.questions)
    rows = demo_rows(ctx)
    names = [r.name for r in rows]
    assert names == ["ensemble base+add+sub+mul", "ensemble gated", "ensemble base+generalist"]
    for r in rows:
        assert r.kind == "fusion" and set(r.accuracy) == {"all", "add", "sub", "mul"}
        assert all(0.0 <= v <= 1.0 for v in r.accuracy.values()) and r.seconds > 0
    assert [r.fuses for r in rows] == [("base", "add", "sub", "mul")] * 2 + [("base", "generalist")]
    assert "of steps ensembled" in rows[1].note
