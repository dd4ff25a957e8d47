"""The demo rows on the zoo: an MoE of the specialists should be good at every operation."""

import pytest

from lmfuse import zoo

HAVE_ZOO = all((zoo.ROOT / n / "config.json").is_file() for n in ("base", *zoo.SPECIALISTS))


def test_training_questions_never_use_held_out_ones():
    from lmfuse.moe.demo import training_questions
    from lmfuse.zoo.questions import held_out_pairs

    qs = training_questions(200, seed=0)
    held = held_out_pairs()
    assert set(qs) == set(zoo.SPECIALISTS)
    assert all((q.op, q.a, q.b) not in held for per in qs.values() for q in per)


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_ZOO, reason="zoo weights not present")
def test_moe_of_specialists_is_good_at_every_op():
    from lmfuse.demo import DemoContext
    from lmfuse.moe.demo import demo_rows

    ctx = DemoContext(questions=zoo.eval_set(20))
    rows = demo_rows(ctx)
    assert [r.name for r in rows] == ["moe add+sub+mul (hidden)", "moe + train-router"]
    specialists = {
        op: zoo.evaluate(zoo.hf_generate_fn(*ctx.member(op)), ctx.questions).per_op[op]
        for op in zoo.SPECIALISTS
    }
    best = rows[-1].accuracy
    for op in zoo.SPECIALISTS:
        # within reach of the specialist on its own operation
        assert best[op] >= specialists[op] - 0.2, (op, best, specialists)
