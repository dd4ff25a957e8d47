"""Issue 16, item 1: MoA and EoT results carry the final reply's full text and finish_reason; kind ``text``."""

from __future__ import annotations

from lmfuse.backends.scripted import ScriptedBackend
from lmfuse.core.config import from_dict
from lmfuse.exchange.config import EoTConfig, MoAConfig
from lmfuse.exchange.eot import EoT
from lmfuse.exchange.moa import MoA
from lmfuse.vote import extract_answer, get_similarity, vote

ESSAY = "Tea is brewed from leaves.\n\nFirst, heat water;   then steep for three minutes.\nServe warm."


def moa(replies: dict, **extra) -> MoA:
    data = {
        "backends": {"s": {"kind": "scripted", "replies": replies}},
        "layers": [[{"name": p, "backend": "s"} for p in ("p1", "p2")]],
        "aggregator": {"name": "agg", "backend": "s"},
        **extra,
    }
    return MoA(from_dict(MoAConfig, data), backends={"s": ScriptedBackend(replies, name="s")})


def test_moa_result_keeps_the_aggregators_full_text_on_an_open_ended_prompt():
    r = moa({"p1": "Boil water.", "p2": "Use leaves.", "agg": ESSAY}).run("How do I make tea?")
    assert r.text == ESSAY  # byte for byte, newlines and all
    assert r.finish_reason == "stop"
    row = r.summary()
    assert row["text"] == ESSAY and row["finish_reason"] == "stop"
    # the default kind (number) finds "three"? no digits: no answer, but the text is still there
    assert r.answer is None and r.stop == "aggregated"


def test_moa_answer_kind_text_is_the_whole_reply_with_whitespace_normalised():
    r = moa({"p1": "a", "p2": "b", "agg": ESSAY}, answer_kind="text").run("How do I make tea?")
    assert r.answer == " ".join(ESSAY.split())
    assert r.text == ESSAY
    assert "The answer is X" not in r.turns[-1].prompt  # no short-answer hint for open-ended output


def test_failed_aggregator_leaves_text_none():
    r = moa({"p1": "a", "p2": "b", "agg": "!error HTTP 500"}).run("Q")
    assert r.stop == "failed" and r.text is None and r.finish_reason is None


def eot(replies: dict, **rules) -> EoT:
    data = {
        "backends": {"s": {"kind": "scripted", "replies": replies}},
        "agents": [{"name": a, "backend": "s"} for a in replies],
        **rules,
    }
    return EoT(from_dict(EoTConfig, data))


def test_eot_result_keeps_the_full_text_of_a_reply_giving_the_final_answer():
    replies = {
        "A": ["A0: so the answer is 3", "A1 long\nreasoning, so the answer is 4"],
        "B": ["B0: the answer is 4", "B1: the answer is 5"],
        "C": ["C0: the answer is 5", "C1 my reasoning: the answer is 4"],
    }
    r = eot(replies, max_rounds=2).run("Q?")
    assert (r.answer, r.stop) == ("4", "majority")
    assert r.text == "A1 long\nreasoning, so the answer is 4"  # lowest-indexed agent with the answer
    assert r.finish_reason == "stop"


def test_eot_early_exit_text_is_agent_zeros_reply():
    r = eot({"A": "A says the answer is 7", "B": "B: the answer is 7"}).run("Q?")
    assert r.stop == "early_exit" and r.text == "A says the answer is 7"


def test_eot_answer_kind_text_agrees_on_identical_texts_up_to_whitespace():
    r = eot({"A": "Paris  is\nthe capital.", "B": "Paris is the capital. "}, answer_kind="text").run("Q?")
    assert r.stop == "early_exit" and r.answer == "Paris is the capital."


def test_extract_kind_text_and_vote_answer_kind_text():
    assert extract_answer("  a\n b  ", "text") == "a b"
    assert extract_answer(" \n ", "text") is None
    assert extract_answer("Case Kept", "text") == "Case Kept"
    res = vote(["x  y", "z", "x\ny", "Z"], similarity=get_similarity("answer", kind="text"))
    assert res.index == 0 and res.answers == ["x y", "z", "x y", "Z"]
