"""The demo on the zoo: identity invariant on real weights, and the demo rows themselves."""

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
def test_moe_of_base_copies_answers_exactly_like_base(tmp_path):
    from lmfuse.core.loading import load_model_and_tokenizer
    from lmfuse.moe.build import build_moe
    from lmfuse.moe.recipe import BuildRecipe, ExpertSpec

    base = str(zoo.path("base"))
    recipe = BuildRecipe(
        base=base, experts=[ExpertSpec(base, ["Q: 1+2= A:"]), ExpertSpec(base, ["Q: 3*4= A:"])]
    )
    build_moe(recipe, tmp_path / "moe")
    questions = zoo.eval_set(15)
    moe = zoo.evaluate(
        zoo.hf_generate_fn(*load_model_and_tokenizer(tmp_path / "moe", dtype="float32")), questions
    )
    dense = zoo.evaluate(zoo.hf_generate_fn(*zoo.load("base")), questions)
    assert moe.completions == dense.completions and len(moe.completions) == len(questions)


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_ZOO, reason="zoo weights not present")
def test_demo_rows_on_the_zoo(monkeypatch):
    from lmfuse.demo import DemoContext
    from lmfuse.moe import demo
    from lmfuse.moe.demo import demo_rows

    # fewer token-router and `moe train` steps (50 and 20 in the recorded demo; restored afterwards), as
    # the graft and merge demo tests do; the prompt router keeps its steps: the routed row is checked exactly
    monkeypatch.setattr(demo, "TRAIN_STEPS", 10)
    monkeypatch.setattr(demo, "BTX_STEPS", 10)

    # each specialist on its own, evaluated here (not by the demo) and handed to the demo, which then
    # compares its rows with these instead of evaluating the specialists a second time
    members = {
        op: zoo.evaluate(zoo.hf_generate_fn(*zoo.load(op)), zoo.eval_set(10)) for op in zoo.SPECIALISTS
    }
    rows = demo_rows(DemoContext(questions=zoo.eval_set(10), results=dict(members)))
    names = [
        "moe add+sub+mul (hidden)",
        "moe + train-router",
        "moe prompt-routed + train-router",
        "moe + train-router + moe train",
    ]
    assert [r.name for r in rows] == names
    for row in rows:
        assert set(row.accuracy) == {"all", *zoo.SPECIALISTS}
        assert row.fuses == zoo.SPECIALISTS and row.below.startswith("loses ")  # compared like every row
        assert all(0.0 <= v <= 1.0 for v in row.accuracy.values())
    for row in rows[1:]:
        first, last = (float(x.split(";")[0]) for x in row.note.split("loss ")[1].split(" -> "))
        assert last < first  # router training lowers the answer loss
    # a prompt routed to one specialist is that specialist, and the trained router sends each of these
    # questions to its operation's specialist: the row scores what each specialist scores on its own operation
    for op in zoo.SPECIALISTS:
        assert rows[2].accuracy[op] == members[op].per_op[op]
