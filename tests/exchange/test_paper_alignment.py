"""Issue 16, item 4: defaults follow the EoT reference code (max_round=5 exchange rounds; nothing
extracted when "the answer is" has no number after it; confidence counts unextracted answers)."""

from __future__ import annotations

import pytest

from lmfuse.core.config import from_dict
from lmfuse.exchange import consensus
from lmfuse.exchange.answers import extract_answer
from lmfuse.exchange.config import EoTConfig
from lmfuse.exchange.eot import EoT


def test_default_runs_round_zero_plus_five_exchange_rounds():
    replies = {a: [f"the answer is {10 * i + r}" for r in range(9)] for i, a in enumerate("ABC")}
    data = {"backends": {"s": {"kind": "scripted", "replies": replies}},
            "agents": [{"name": a, "backend": "s"} for a in "ABC"]}  # fmt: skip
    r = EoT(from_dict(EoTConfig, data)).run("Q")
    assert r.stop == "majority"
    assert r.rounds == 6 and max(t.round for t in r.turns) == 5  # rounds 1..5 are exchanges
    assert r.calls == 18


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I computed 12 and 7, so the answer is unclear.", None),  # the reference returns ""
        ("the answer is", None),
        ("We get 12; the answer is 12 apples", "12"),
        ("no phrase here: 3 then 4", "4"),  # without the phrase: the last number, as before
    ],
)
def test_answer_is_without_a_number_extracts_nothing(text, expected):
    assert extract_answer(text, "number") == expected


def test_confidence_counts_unextracted_answers_like_the_reference():
    # the reference stores "" for a reply with no answer and counts it like any other answer
    assert consensus.confidence(["3", None, None]) == pytest.approx(2 / 3)
    assert consensus.confidence(["3", "3", None]) == pytest.approx(2 / 3)
    assert consensus.confidence([None]) == 1.0 and consensus.confidence([]) == 0.0
