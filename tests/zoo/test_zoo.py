import hashlib
import json
import re
from pathlib import Path

import pytest

from lmfuse import zoo
from lmfuse.errors import ConfigError, ModelNotFoundError
from lmfuse.vote.extract import extract_number
from lmfuse.zoo.questions import OPS, Question, held_out_pairs, solution

README = Path(zoo.__file__).parent / "README.md"


def test_eval_set_is_fixed_distinct_and_balanced():
    qs = zoo.eval_set()
    assert qs == zoo.eval_set()
    assert len(qs) == 300 and len({(q.op, q.a, q.b) for q in qs}) == 300
    assert {q.op: sum(x.op == q.op for x in qs) for q in qs} == {"add": 100, "sub": 100, "mul": 100}
    assert zoo.eval_set(5) == [q for q in qs if int(q.id[-3:]) < 5]
    assert all(int(q.answer) >= 0 for q in qs)
    q = qs[0]
    assert q.prompt == f"Q: {q.a}+{q.b}= A:" and q.text == q.prompt + q.solution
    assert len(held_out_pairs()) == 300


def test_solutions_are_digit_by_digit_scratchpads_that_end_in_the_answer():
    assert solution("add", 37, 48) == " 7+8=15,3+4+1=8 so 85"
    assert solution("sub", 84, 37) == " 14-7=7,8-1-3=4 so 47"
    assert solution("mul", 37, 8) == " 7*8=56,3*8+5=29 so 296"
    assert solution("add", 5, 48) == " 5+8=13,0+4+1=5 so 53"
    longest = 0
    for op in OPS:
        for a in range(100):
            for b in range(10 if op == "mul" else a + 1 if op == "sub" else 100):
                q = Question("", op, a, b)
                text = q.solution
                # every step is true arithmetic, and every scorer reads the answer
                for lhs, rhs in re.findall(r"([\d+*-]+)=(\d+)", text):
                    assert eval(lhs) == int(rhs), (q, text)  # noqa: S307 - digits and + - * only
                assert zoo.extract_number(text) == extract_number(text) == q.answer
                longest = max(longest, len(text))
    assert longest + 1 == zoo.MAX_NEW_TOKENS  # the budget: the longest answer, one char a token, and EOS


def test_score_and_extraction():
    qs = zoo.eval_set(2)
    completions = [f" {q.answer}" if q.op != "mul" else " -1" for q in qs]
    result = zoo.score(qs, completions)
    assert result.per_op == {"add": 1.0, "sub": 1.0, "mul": 0.0}
    assert result.accuracy == pytest.approx(4 / 6)
    assert zoo.extract_number(" 007 apples") == "7" and zoo.extract_number("none") is None
    # the EoT rule: after "the answer is", else the last number; old bare answers still read
    assert zoo.extract_number(" 85") == "85" and zoo.extract_number(" 7+8=15,3+4+1=8 so 85") == "85"
    assert zoo.extract_number("2 apples, the answer is 7. 9") == "7"
    with pytest.raises(ValueError, match="expected 6 completions"):
        zoo.score(qs, completions[:2])


def test_evaluate_batches_prompts():
    seen = []

    def oracle(prompts):
        seen.append(len(prompts))
        answers = {q.prompt: q.answer for q in zoo.eval_set()}
        return [f" {answers[p]}" for p in prompts]

    result = zoo.evaluate(oracle, batch_size=64)
    assert result.accuracy == 1.0 and seen == [64] * 4 + [44]


def test_unknown_zoo_model_is_a_clear_error():
    with pytest.raises(ModelNotFoundError, match="no zoo model 'nope'; available: base"):
        zoo.path("nope")


def test_every_member_is_committed_with_a_card():
    assert zoo.names() == list(zoo.MEMBERS)
    for name in zoo.MEMBERS:
        d = zoo.path(name)
        assert (d / "model.safetensors").is_file() and (d / "tokenizer.json").is_file()
        assert "accuracy" in (d / "README.md").read_text()


@pytest.fixture(scope="module")
def measured():
    out = {}
    for name in zoo.MEMBERS:
        model, tok = zoo.load(name)
        out[name] = zoo.evaluate(zoo.hf_generate_fn(model, tok), batch_size=100)
    return out


def test_committed_weights_reproduce_the_recorded_accuracy(measured):
    for name, result in measured.items():
        card = json.loads((zoo.path(name) / "training.json").read_text())
        assert {k: round(v, 4) for k, v in result.row().items()} == card["accuracy"], name


def test_readme_table_matches_evaluate(measured):
    rows = dict(re.findall(r"^\| (\w+) \|(.+)\|$", README.read_text(), flags=re.M))
    for name, result in measured.items():
        cells = [float(c) for c in rows[name].split("|")]
        assert cells == [round(v, 2) for v in result.row().values()], name


def test_specialists_are_measurably_different(measured):
    for op in zoo.SPECIALISTS:
        own = measured[op].per_op[op]
        siblings = [measured[m].per_op[op] for m in ("base", *zoo.SPECIALISTS) if m != op]
        # accuracies are multiples of 1/100: compare in whole questions, not in floats
        assert round(100 * (own - max(siblings))) >= 15, f"{op} specialist should be clearly best on {op}"
        # best of all members too; the generalist (another model, trained on everything) may come close
        assert round(100 * (own - measured["generalist"].per_op[op])) >= 10, f"{op} specialist vs generalist"
        assert min(measured[op].per_op.values()) < 0.6, f"{op} specialist should not be good at everything"


def test_validation_set_is_fixed_balanced_and_disjoint_from_the_held_out_set():
    val = zoo.validation_set()
    assert val == zoo.validation_set()
    assert len(val) == 180 and len({q.id for q in val}) == 180
    for op in OPS:
        mine = [(q.a, q.b) for q in val if q.op == op]
        assert len(mine) == len(set(mine)) == 60
    assert not {(q.op, q.a, q.b) for q in val} & held_out_pairs()
    # the committed zoo was trained with exactly these questions excluded, in this order (its stopping
    # rule read them): the digest of the list scripts/train_zoo.py built before the move into the package
    digest = hashlib.sha256(json.dumps([[q.op, q.a, q.b] for q in val]).encode()).hexdigest()[:16]
    assert digest == "5150ae1dba3cb3f2"
    with pytest.raises(ConfigError, match="per_op"):
        zoo.validation_set(0)
