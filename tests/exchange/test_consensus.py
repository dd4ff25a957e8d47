"""Confidence, unanimity, majority tie rule, topologies and the answer extractor, as units."""

from __future__ import annotations

import random

import pytest

from lmfuse.errors import ConfigError
from lmfuse.exchange import consensus, topology
from lmfuse.exchange.answers import extract_answer


def test_confidence():
    assert consensus.confidence(["3", "3", "4"]) == pytest.approx(2 / 3)
    # issue 16: an unextracted answer counts like any other, as in the EoT reference code
    assert consensus.confidence(["3", None, None]) == pytest.approx(2 / 3)
    assert consensus.confidence([None]) == 1.0 and consensus.confidence([]) == 0.0


def test_unanimous_needs_every_answer():
    assert consensus.unanimous(["1", "1"]) and not consensus.unanimous(["1", None])
    assert not consensus.unanimous([None, None]) and not consensus.unanimous([])


def test_majority_is_invariant_to_agent_order_without_ties():
    rng = random.Random(0)
    for _ in range(200):
        answers = [rng.choice(["1", "2", "3", None]) for _ in range(rng.randint(1, 7))]
        counts = {a: answers.count(a) for a in set(answers) if a is not None}
        winner = consensus.majority(answers)
        if not counts:
            assert winner is None
            continue
        top = max(counts.values())
        assert counts[winner] == top
        if list(counts.values()).count(top) == 1:
            shuffled = answers[:]
            rng.shuffle(shuffled)
            assert consensus.majority(shuffled) == winner


def test_majority_tie_rule():
    assert consensus.majority(["1", "2"], [0.5, 1.0]) == "2"  # higher confidence
    assert consensus.majority(["1", "2"], [1.0, 1.0]) == "1"  # then lowest agent index
    assert consensus.majority(["2", "1"]) == "2"


@pytest.mark.parametrize("n", [2, 3, 4, 6])
def test_builtin_topologies_generalise(n):
    for name in topology.PARADIGMS:
        reads = topology.builtin(name, n)
        assert len(reads) == n and all(i not in r for i, r in enumerate(reads))
    assert topology.builtin("relay", n) == [[(i + 1) % n] for i in range(n)]
    assert topology.builtin("memory", n)[0] == list(range(1, n))
    assert topology.builtin("report", n)[1:] == [[0]] * (n - 1)
    assert all(0 not in r for r in topology.builtin("debate", n)[1:])
    with pytest.raises(ConfigError, match="at least 2 agents"):
        topology.builtin("memory", 1)


def test_adjacency_errors_are_collected():
    with pytest.raises(ConfigError) as err:
        topology.from_adjacency({"A": ["A", "Q"], "X": []}, ["A", "B"])
    assert len(err.value.problems) == 3


@pytest.mark.parametrize(
    ("text", "kind", "expected"),
    [
        ("37+48 is 85, so the answer is 85.", "number", "85"),
        ("First 1,200 then... The answer is 1,250 apples (not 3).", "number", "1250"),
        ("I think 12 and then 13", "number", "13"),
        ("the answer is -4.0", "number", "-4"),
        ("nothing here", "number", None),
        ("Between A and C the answer is (C).", "choice", "C"),
        ("So, yes. The answer is No", "yesno", "no"),
    ],
)
def test_extract_answer(text, kind, expected):
    assert extract_answer(text, kind) == expected
