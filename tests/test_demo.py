from lmfuse import zoo
from lmfuse.demo import run_demo


def test_demo_members_rows_match_zoo_evaluate():
    seen = []
    rows = run_demo(per_op=4, methods=[], on_row=seen.append)
    assert [r.name for r in rows] == zoo.names() and seen == rows
    assert all(r.kind == "member" and set(r.accuracy) == {"all", "add", "sub", "mul"} for r in rows)
    model, tok = zoo.load("base")
    expected = zoo.evaluate(zoo.hf_generate_fn(model, tok), zoo.eval_set(4)).row()
    assert rows[0].accuracy == expected
