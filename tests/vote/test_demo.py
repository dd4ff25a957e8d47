"""The vote demo's pieces: sampling with a tiny model, voting the samples, and the rows themselves."""

import pytest

from lmfuse import zoo
from lmfuse.demo import DemoContext
from lmfuse.testing import char_tokenizer, tiny_model
from lmfuse.vote.demo import demo_rows, member_samples, sample_completions, voted_completions


@pytest.fixture(scope="module")
def member():
    tok = char_tokenizer()
    return tiny_model("llama", vocab_size=len(tok), seed=0), tok


def test_sampling_gives_n_reproducible_completions_per_prompt(member):
    model, tok = member
    prompts = ["Q: 1+2= A:", "Q: 30-4= A:", "Q: 7*8= A:"]
    a = sample_completions(model, tok, prompts, n=4, temperature=1.0, max_new_tokens=5, seed=7)
    assert len(a) == 3 and all(len(group) == 4 and all(isinstance(t, str) for t in group) for group in a)
    assert a == sample_completions(model, tok, prompts, n=4, temperature=1.0, max_new_tokens=5, seed=7)
    # A random tiny model at T=1 does not repeat itself 12 times out of 12.
    assert len({t for group in a for t in group}) > 1


def test_majority_corrects_a_minority_of_wrong_answers():
    questions = zoo.eval_set(2)  # 2 per op
    right = [q.answer for q in questions]
    sets = [[f" {a}", " 999", f" {a}", f"{a}", " -1"] for a in right]
    picked, ties = voted_completions(sets, "answer")
    assert picked == right and ties == 0
    assert zoo.score(questions, picked).accuracy == 1.0
    # char ROUGE-L picks a central text; "999" and "-1" are nobody's neighbours.
    picked, _ = voted_completions(sets, "char_rouge_l")
    assert [p.strip() for p in picked] == right


def test_demo_rows_with_tiny_members(member):
    questions = zoo.eval_set(2)
    ctx = DemoContext(questions=questions, members={"a": member, "b": member})
    gen = zoo.hf_generate_fn(*member)
    for name in ctx.members:
        ctx.results[name] = zoo.evaluate(gen, questions)
    rows = demo_rows(ctx)
    assert [r.name for r in rows] == [
        "vote: answer, 2 greedy",
        "vote: answer, 2x4 sampled",
        "vote: char_rouge_l, 2x4 sampled",
        "a sampled 8x, majority",
    ]
    assert [r.kind for r in rows] == ["fusion"] * 3 + ["baseline"] and rows[0].fuses == ("a", "b")
    for r in rows:
        assert set(r.accuracy) == {"all", "add", "sub", "mul"} and 0.0 <= r.accuracy["all"] <= 1.0
    # Two identical members: their greedy majority is the member itself.
    assert rows[0].accuracy == ctx.results["a"].row()


def test_member_samples_are_the_same_whoever_asks_first(member):
    questions = zoo.eval_set(1)
    first, second = (DemoContext(questions=questions, members={"a": member}) for _ in range(2))
    four = member_samples(first, "a", 4)
    two = member_samples(second, "a", 2)  # fewer, fresh context: the same first two
    assert [g[:2] for g in four] == two and member_samples(second, "a", 4) == four
    assert len({t for g in four for t in g}) > 1  # really sampled: a random tiny model varies


def test_answer_vote_reads_completions_like_the_zoo_scorer():
    # the EoT rule: the number after "the answer is", else the last number ("x-3" reads as 3)
    sets = [
        [" 12 and 5", "12", " 5"],
        [" -3x", "x-3", "3 so 7, the answer is 3"],
        [" 7+8=15,3+4+1=8 so 85", " 85"],
    ]
    picked, _ = voted_completions(sets, "answer")
    assert picked == ["5", "3", "85"]
    assert [zoo.extract_number(c) for c in sets[0]] == ["5", "12", "5"]
    assert [zoo.extract_number(c) for c in sets[1]] == ["-3", "3", "3"]


def test_greedy_majority_on_the_zoo_matches_a_counter_oracle():
    from collections import Counter

    questions = zoo.eval_set(6)
    completions = []
    for name in zoo.names():
        model, tok = zoo.load(name)
        completions.append(zoo.evaluate(zoo.hf_generate_fn(model, tok), questions).completions)
    sets = [list(c) for c in zip(*completions, strict=True)]
    picked, _ = voted_completions(sets, "answer")
    for group, got in zip(sets, picked, strict=True):
        answers = [a for a in map(zoo.extract_number, group) if a is not None]
        # most_common keeps first-seen order among equal counts = our lowest-index tie rule
        expected = Counter(answers).most_common(1)[0][0] if answers else ""
        assert got == expected, (group, got, expected)
