"""vote / vote_batch: scores, permutation invariance, ties, duplicates and every bad input."""

import math
import random

import numpy as np
import pytest

from lmfuse.errors import ConfigError, InputDataError
from lmfuse.vote import vote, vote_batch
from lmfuse.vote.rouge import char_rouge_matrix

SIMS = ["char_rouge_l", "word_rouge_l", "exact", "answer", ["char_rouge_l", "word_rouge_l"]]


def _candidates(rng, n, base="the answer is 42 because six times seven"):
    out = []
    for _ in range(n):
        words = base.split()
        for _ in range(rng.randint(0, 4)):
            words[rng.randrange(len(words))] = rng.choice(["41", "43", "so", "because", "eight", "中文"])
        out.append(" ".join(words))
    return out


def test_scores_are_sums_of_pairwise_rouge():
    cands = ["abcdef", "abcxef", "zzzzzz", "abcd"]
    r = vote(cands)
    m = char_rouge_matrix(cands)
    for i in range(len(cands)):
        assert r.scores[i] == math.fsum(m[i, j] for j in range(len(cands)) if j != i)
    assert r.index == int(np.argmax(r.scores)) == 0 and r.text == "abcdef"
    assert r.margin == pytest.approx(sorted(r.scores)[-1] - sorted(r.scores)[-2])
    assert not r.tie and r.tied == [0]
    assert np.array_equal(r.matrix, m)


@pytest.mark.parametrize("similarity", SIMS, ids=str)
def test_permutation_permutes_scores_and_keeps_the_winner(similarity):
    rng = random.Random(str(similarity))
    for _ in range(15):
        cands = _candidates(rng, rng.randint(2, 9))
        r = vote(cands, similarity)
        perm = list(range(len(cands)))
        rng.shuffle(perm)
        rp = vote([cands[p] for p in perm], similarity)
        assert rp.scores == [r.scores[p] for p in perm]  # exact sums: bit for bit
        if not r.tie and r.index is not None:
            key = r.answers if r.answers is not None else [c for c in cands]
            key_p = rp.answers if rp.answers is not None else [cands[p] for p in perm]
            assert key_p[rp.index] == key[r.index]  # same winner (for answer voting: same answer)
        if r.index is None:
            assert rp.index is None


def test_ties_go_to_the_lowest_index():
    # Symmetric situation: "ab" and "ba" are equally close to everything else.
    r = vote(["ab", "ba", "xy"])
    assert r.scores[0] == r.scores[1]
    assert r.tie and r.tied == [0, 1] and r.index == 0 and r.margin == 0.0
    r2 = vote(["ba", "ab", "xy"])
    assert r2.index == 0 and r2.text == "ba"


def test_ties_within_tolerance_and_exact_mode():
    r = vote(["a", "b"], lambda a, b: {("a", "b"): 0.3, ("b", "a"): 0.1 + 0.2}.get((a, b), 1.0))
    assert r.scores[0] != r.scores[1]  # 0.3 vs 0.30000000000000004
    assert r.tie and r.index == 0
    strict = vote(["a", "b"], lambda a, b: 0.3 if a == "a" else 0.1 + 0.2, tie_tol=0.0)
    assert not strict.tie and strict.index == 1


def test_single_candidate_and_duplicates():
    r = vote(["only"])
    assert (r.index, r.text, r.scores, r.margin, r.tie) == (0, "only", [0.0], None, False)
    r = vote(["b text", "a text", "b text", "zz"])
    assert r.index == 0 and r.tied == [0, 2] and not r.tie  # identical texts are not a tie
    assert r.scores[0] == r.scores[2]
    assert r.margin == r.scores[0] - r.scores[1] > 0  # against the best *different* text
    r = vote(["same", "same", "same"])
    assert r.index == 0 and r.scores == [2.0, 2.0, 2.0] and not r.tie and r.margin is None
    r = vote(["4", "so 4", "5", "the answer is 5", "4"], "answer")
    assert r.answers[r.index] == "4" and r.margin == 2.0 - 1.0 and not r.tie


def test_empty_strings_and_unicode_work():
    r = vote(["", "", "x"])
    assert r.scores == [0.0, 0.0, 0.0] and r.index == 0
    r = vote(["我爱北京天安门", "我爱北京", "😀😀", "我爱天安门"], "word_rouge_l")
    assert r.text == "我爱北京天安门"


def test_very_long_candidates():
    rng = random.Random(3)
    base = "".join(rng.choice("abcdefgh ") for _ in range(100_000))
    cands = [base, base[:90_000], base[10_000:], "short"]
    r = vote(cands)
    assert r.index == 0


def test_answer_voting_reports_unparsed_and_never_picks_them():
    r = vote(["I'd say 12", "so the answer is 7", "7", "no idea", "The answer is 7.0"], "answer")
    assert r.answers == ["12", "7", "7", None, "7"]
    assert r.unparsed == [3] and r.index == 1 and r.scores[1] == 2.0
    nobody = vote(["no idea", "pass"], "answer")
    assert nobody.index is None and nobody.text is None and nobody.unparsed == [0, 1]
    lone = vote(["no idea", "maybe 3"], "answer")
    assert lone.index == 1 and lone.margin is None


def test_candidate_weights_change_the_majority():
    cands = ["answer 1", "answer 2", "answer 2", "answer 1"]
    assert vote(cands, "answer").index == 0
    assert vote(cands, "answer", candidate_weights=[0.1, 1, 1, 0.1]).index == 1


def test_batch_equals_one_by_one():
    rng = random.Random(5)
    sets = [_candidates(rng, rng.randint(1, 6)) for _ in range(40)]
    batch = vote_batch(sets, ["char_rouge_l", "word_rouge_l"], [1.0, 0.5], chunk_size=7)
    for cands, b in zip(sets, batch, strict=True):
        one = vote(cands, ["char_rouge_l", "word_rouge_l"], [1.0, 0.5])
        assert (b.index, b.scores, b.tie) == (one.index, one.scores, one.tie)
        assert set(b.components) == ({"char_rouge_l", "word_rouge_l"} if len(cands) else set())


def test_user_callable_is_called_per_ordered_pair():
    calls = []

    def overlap(a, b):
        calls.append((a, b))
        return len(set(a) & set(b))

    r = vote(["abc", "abd", "xyz"], overlap)
    assert r.index == 0 and len(calls) == 9  # includes the diagonal, which scores ignore


@pytest.mark.parametrize(
    ("candidates", "message"),
    [
        ([], "no candidates"),
        ("just a string", "expected a list of candidate strings, found str"),
        (None, "found NoneType"),
        (["ok", 3], "candidate 1: expected a string, found int"),
        (["ok", None], "candidate 1: expected a string, found NoneType"),
    ],
)
def test_bad_candidates_raise_clear_errors(candidates, message):
    with pytest.raises(InputDataError, match=message):
        vote(candidates)


def test_bad_batch_names_the_question():
    with pytest.raises(InputDataError, match="question 1: no candidates"):
        vote_batch([["a"], []])
    with pytest.raises(InputDataError, match="expected a list of candidate lists, found generator"):
        vote_batch(["a", "b"] for _ in range(2))
    assert vote_batch([]) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"similarity": "rouge"}, "unknown similarity 'rouge'"),
        ({"similarity": []}, "at least one similarity"),
        ({"similarity": 3}, "found int"),
        ({"similarity": ["exact", "chrf"], "weights": [1.0]}, "expected 2 weights"),
        ({"similarity": ["exact", "chrf"], "weights": [1.0, -1.0]}, "non-negative"),
        ({"similarity": ["exact", "chrf"], "weights": [0, 0]}, "not all 0"),
        ({"normalize": "minmax"}, "normalize: expected one of zscore, rank, none"),
        ({"candidate_weights": [1.0]}, "expected 2 weights"),
        ({"similarity": lambda a, b: float("nan")}, "must be a finite number"),
        ({"similarity": lambda a, b: "high"}, "must return a number"),
    ],
)
def test_bad_options_raise_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        vote(["a", "b"], **kwargs)


def test_progress_bar_on_long_runs(capsys):
    import time

    def slow(a, b):
        time.sleep(0.05)
        return float(a == b)

    vote_batch([["a", "b"]] * 4, slow, chunk_size=1, progress=True)  # ~0.8 s: past the bar's 0.5 s delay
    assert "voting" in capsys.readouterr().err
    vote_batch([["a", "b"]] * 4, slow, chunk_size=1)
    assert capsys.readouterr().err == ""
