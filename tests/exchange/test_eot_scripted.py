"""EoT driven by the scripted backend: who reads whom, confidences, early exit, both stopping rules."""

from __future__ import annotations

import json
import time

import pytest

from lmfuse.core.config import from_dict
from lmfuse.errors import ConfigError
from lmfuse.exchange.config import EoTConfig
from lmfuse.exchange.eot import EoT

# Written out by hand from the paper's table (3 agents) and its generalisation (5 agents): X reads these.
EXPECTED_READS = {
    ("memory", 3): {"A": "BC", "B": "AC", "C": "AB"},
    ("report", 3): {"A": "BC", "B": "A", "C": "A"},
    ("relay", 3): {"A": "B", "B": "C", "C": "A"},
    ("debate", 3): {"A": "BC", "B": "C", "C": "B"},
    ("memory", 5): {"A": "BCDE", "B": "ACDE", "C": "ABDE", "D": "ABCE", "E": "ABCD"},
    ("report", 5): {"A": "BCDE", "B": "A", "C": "A", "D": "A", "E": "A"},
    ("relay", 5): {"A": "B", "B": "C", "C": "D", "D": "E", "E": "A"},
    ("debate", 5): {"A": "BCDE", "B": "CDE", "C": "BDE", "D": "BCE", "E": "BCD"},
}


def config(replies: dict, n: int | None = None, **rules) -> EoTConfig:
    names = list(replies) if n is None else "ABCDE"[:n]
    data = {
        "backends": {"script": {"kind": "scripted", "replies": replies}},
        "agents": [{"name": a, "backend": "script"} for a in names],
        **rules,
    }
    return from_dict(EoTConfig, data)


def solution(agent: str, rnd: int) -> str:
    """A reply that is unique to (agent, round), so its presence in a prompt is unambiguous."""
    return f"<sol {agent}{rnd}> so the answer is {100 * (ord(agent) - 64) + rnd}"


@pytest.mark.parametrize(("paradigm", "n"), sorted(EXPECTED_READS))
def test_each_prompt_holds_exactly_the_expected_peer_solutions(paradigm, n):
    names = "ABCDE"[:n]
    rounds = 4
    replies = {a: [solution(a, r) for r in range(rounds)] for a in names}
    eot = EoT(config(replies, topology=paradigm, max_rounds=rounds))
    result = eot.run("Q?", "q1")
    assert result.rounds == rounds and result.calls == rounds * n and result.stop == "majority"
    seen = {(t.round, t.agent): t for t in result.turns}
    for rnd in range(rounds):
        for a in names:
            turn = seen[rnd, a]
            present = {(b, r) for b in names for r in range(rounds) if f"<sol {b}{r}>" in turn.prompt}
            if rnd == 0:
                expected = set()
                assert turn.reads == []
            else:
                readers = EXPECTED_READS[paradigm, n][a]
                expected = {(b, rnd - 1) for b in readers} | {(a, rnd - 1)}  # peers' latest + its own
                assert turn.reads == list(readers)
            assert present == expected, (paradigm, n, rnd, a)
            # Peers' confidences appear from round 2 on, never for the agent's own solution. Every
            # reply is a new answer, so after round r each history has r + 1 distinct answers.
            assert ("(confidence" in turn.prompt) == (rnd >= 2)
            if rnd >= 2:
                shown = f"(confidence {1 / rnd:.2f})"
                assert turn.prompt.count(shown) == len(EXPECTED_READS[paradigm, n][a])
    assert result.confidences == [pytest.approx([1 / (r + 1)] * n) for r in range(rounds)]


def test_confidence_values_follow_each_agents_history_and_are_shown_to_peers():
    replies = {
        "A": ["the answer is 1", "the answer is 2", "the answer is 1", "the answer is 1"],
        "B": ["the answer is 5", "the answer is 5", "no idea", "the answer is 6"],
        "C": ["the answer is 9", "the answer is 8", "the answer is 7", "the answer is 6"],
    }
    result = EoT(config(replies, topology="memory", max_rounds=4)).run("Q?")
    assert result.answers == [["1", "5", "9"], ["2", "5", "8"], ["1", None, "7"], ["1", "6", "6"]]
    expected = [[1, 1, 1], [1 / 2, 1, 1 / 2], [2 / 3, 2 / 3, 1 / 3], [3 / 4, 2 / 4, 1 / 4]]
    assert result.confidences == [pytest.approx(row) for row in expected]
    round3 = {t.agent: t.prompt for t in result.turns if t.round == 3}
    assert "Solution of agent A (confidence 0.67)" in round3["B"]
    assert "Solution of agent B (confidence 0.67)" in round3["C"]
    assert "Solution of agent C (confidence 0.33)" in round3["A"]
    assert "below 0.5" in round3["A"]
    round2 = {t.agent: t.prompt for t in result.turns if t.round == 2}
    assert "Solution of agent A (confidence 0.50)" in round2["B"]
    assert "no idea" in round3["A"]  # B's latest reply is shown as is, though nothing was extracted
    assert result.answer == "6"  # two votes against one
    assert result.stop == "majority"


@pytest.mark.parametrize("n", [3, 5])
def test_early_exit_when_initial_answers_are_unanimous(n):
    replies = {a: ["the answer is 42", "the answer is 7"] for a in "ABCDE"[:n]}
    result = EoT(config(replies, topology="relay", max_rounds=5)).run("Q?")
    assert (result.stop, result.rounds, result.calls, result.answer) == ("early_exit", 1, n, "42")
    off = EoT(config(replies, topology="relay", max_rounds=5, early_exit=False)).run("Q?")
    # Without early exit the exchange happens; round 1 is unanimous on 7, so unanimity stops it.
    assert (off.stop, off.rounds, off.calls, off.answer) == ("unanimous", 2, 2 * n, "7")


@pytest.mark.parametrize("n", [3, 5])
def test_stop_on_unanimity_versus_majority_at_the_round_cap(n):
    names = "ABCDE"[:n]
    replies = {a: [f"the answer is {i}", "the answer is 3", "the answer is 3", f"the answer is {i % 2}"]
               for i, a in enumerate(names)}  # fmt: skip
    stop = EoT(config(replies, topology="debate", max_rounds=4)).run("Q?")
    assert (stop.stop, stop.rounds, stop.calls, stop.answer) == ("unanimous", 2, 2 * n, "3")
    cap = EoT(config(replies, topology="debate", max_rounds=4, stop_on_unanimity=False)).run("Q?")
    assert (cap.stop, cap.rounds, cap.calls) == ("majority", 4, 4 * n)
    last = [str(i % 2) for i in range(n)]
    assert cap.answers[-1] == last
    assert cap.answer == max(set(last), key=last.count)


def test_majority_ties_confidence_then_lowest_agent_and_unextracted_dropped():
    # Round 1: A=2, B=3, C=nothing. 2 and 3 tie; both agents have confidence 0.5 -> lowest index (A).
    replies = {"A": ["the answer is 1", "the answer is 2"], "B": ["the answer is 1", "the answer is 3"],
               "C": ["the answer is 4", "???"]}  # fmt: skip
    r = EoT(config(replies, max_rounds=2, early_exit=False)).run("Q?")
    assert r.answers[-1] == ["2", "3", None] and r.answer == "2"
    # B has higher confidence (3, 3) than A (1, 2): the tie goes to B's answer.
    replies = {"A": ["the answer is 1", "the answer is 2"], "B": ["the answer is 3", "the answer is 3 again"],
               "C": ["the answer is 4", "???"]}  # fmt: skip
    r = EoT(config(replies, max_rounds=2, early_exit=False)).run("Q?")
    assert r.answers[-1] == ["2", "3", None] and r.confidences[-1][:2] == [0.5, 1.0] and r.answer == "3"
    none = EoT(config({"A": "no", "B": "idea"}, max_rounds=2)).run("Q?")
    assert (none.answer, none.stop, none.rounds) == (None, "no_answer", 2)  # None is never unanimous


def test_user_adjacency_and_config_errors():
    replies = {a: [solution(a, r) for r in range(2)] for a in "ABC"}
    r = EoT(config(replies, topology={"A": ["C"], "C": ["A", "B"]}, max_rounds=2)).run("Q?")
    reads = {t.agent: t.reads for t in r.turns if t.round == 1}
    assert reads == {"A": ["C"], "B": [], "C": ["A", "B"]}
    b_prompt = next(t.prompt for t in r.turns if t.round == 1 and t.agent == "B")
    assert "<sol B0>" in b_prompt and "<sol A0>" not in b_prompt and "<sol C0>" not in b_prompt
    with pytest.raises(ConfigError, match="unknown agent 'Z'"):
        EoT(config(replies, topology={"A": ["Z"]}))
    with pytest.raises(ConfigError) as err:
        from_dict(EoTConfig, {"backends": {}, "agents": [{"name": "A", "backend": "x"}, {"name": "A", "backend": "x"}],
                              "topology": "star", "max_rounds": 0})  # fmt: skip
    text = str(err.value)
    for needle in ("unknown backend 'x'", "duplicate agent name 'A'", "'star'", "max_rounds"):
        assert needle in text


def test_failed_call_is_flagged_and_previous_solution_stays_visible():
    replies = {"A": ["the answer is 1", "!error HTTP 500: boom", "the answer is 1"],
               "B": [solution("B", 0), solution("B", 1), solution("B", 2)], "C": "the answer is 1"}  # fmt: skip
    r = EoT(config(replies, max_rounds=3, stop_on_unanimity=False)).run("Q?")
    assert r.failures == ["round 1, agent A: HTTP 500: boom"]
    assert r.answers[1][0] is None
    b2 = next(t.prompt for t in r.turns if t.round == 2 and t.agent == "B")
    assert "Solution of agent A (confidence 0.50):\nthe answer is 1" in b2  # round 0 text; history [1, None]


def test_calls_of_a_round_run_concurrently():
    replies = {a: [f"the answer is {i}"] for i, a in enumerate("ABCDE")}
    cfg = config(replies, max_rounds=3)
    cfg.backends["script"].delay = 0.2
    start = time.perf_counter()
    r = EoT(cfg).run("Q?")
    elapsed = time.perf_counter() - start
    assert r.calls == 15
    assert elapsed < 3 * 0.2 * 2, elapsed  # sequential calls would take 3.0 s


def test_transcript_jsonl_has_every_prompt_and_reply(tmp_path):
    from lmfuse.exchange.transcript import write_transcript

    replies = {a: [solution(a, r) for r in range(2)] for a in "ABC"}
    r = EoT(config(replies, max_rounds=2)).run("Q?", "x7")
    path = tmp_path / "t.jsonl"
    assert write_transcript(r.turns, path) == 6
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(row["round"], row["agent"]) for row in rows] == [
        (0, "A"),
        (0, "B"),
        (0, "C"),
        (1, "A"),
        (1, "B"),
        (1, "C"),
    ]
    assert all(row["question_id"] == "x7" and row["prompt"] and row["reply"] for row in rows)
    assert rows[4]["reply"] == solution("B", 1) and rows[4]["reads"] == ["A", "C"]
