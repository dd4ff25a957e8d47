"""MoA with the scripted backend: who reads what, token caps, failures flagged and not dropped."""

from __future__ import annotations

import pytest

from lmfuse.backends.scripted import ScriptedBackend
from lmfuse.core.config import from_dict
from lmfuse.errors import ConfigError
from lmfuse.exchange.config import MoAConfig
from lmfuse.exchange.moa import MoA


def make(replies: dict, layers: list[list[str]], **extra) -> tuple[MoA, ScriptedBackend]:
    data = {
        "backends": {"s": {"kind": "scripted", "replies": replies}},
        "layers": [[{"name": p, "backend": "s", "max_tokens": 100} for p in layer] for layer in layers],
        "aggregator": {"name": "agg", "backend": "s", "system": "You are the final judge."},
        **extra,
    }
    backend = ScriptedBackend(replies, name="s")
    return MoA(from_dict(MoAConfig, data), backends={"s": backend}), backend


def test_layers_read_exactly_the_previous_layer_and_the_aggregator_answers():
    replies = {
        "P1": ["<P1 L0> 7", "<P1 L1> the answer is 8"],
        "P2": ["<P2 L0> 9", "<P2 L1> the answer is 8"],
        "P3": ["<P3 L0> 8", "<P3 L1> the answer is 6"],
        "agg": "<agg> combining them, the answer is 8.",
    }
    moa, backend = make(replies, [["P1", "P2", "P3"], ["P1", "P2", "P3"]], layer_max_tokens=[50, 20])
    r = moa.run("What is 4+4?", "q9")
    assert (r.answer, r.stop, r.calls, r.rounds, r.failures) == ("8", "aggregated", 7, 3, [])
    assert r.answers == [["7", "9", "8"], ["8", "8", "6"], ["8"]]
    by = {(t.round, t.agent): t for t in r.turns}
    for p in ("P1", "P2", "P3"):
        assert "<" not in by[0, p].prompt  # layer 0 reads nothing
        layer1 = by[1, p].prompt
        assert all(f"<{q} L0>" in layer1 for q in ("P1", "P2", "P3")) and "L1>" not in layer1
    agg = by[2, "agg"].prompt
    assert all(f"<{q} L1>" in agg for q in ("P1", "P2", "P3")) and "L0>" not in agg
    assert "You are the final judge." in agg and "The answer is X" in agg
    assert by[2, "agg"].reads == ["P1", "P2", "P3"]
    caps = {(c.meta["round"], c.meta["agent"]): c.max_tokens for c in backend.calls}
    assert caps[0, "P1"] == 50 and caps[1, "P3"] == 20 and caps[2, "agg"] == 256


def test_one_layer_is_three_answers_as_references_for_a_fourth():
    replies = {"a": "<a> 1", "b": "<b> 2", "c": "<c> 2", "agg": "the answer is 2"}
    moa, backend = make(replies, [["a", "b", "c"]])
    r = moa.run("Q")
    assert r.answer == "2" and r.calls == 4
    assert [c.meta["agent"] for c in backend.calls][-1] == "agg"
    assert all(f"<{x}>" in r.turns[-1].prompt for x in "abc")


def test_failed_proposers_are_flagged_and_a_failed_layer_falls_back():
    replies = {"a": ["<a0> 1", "!error HTTP 503: down"], "b": ["!error timed out", "!error timed out"],
               "agg": "the answer is 1"}  # fmt: skip
    moa, _ = make(replies, [["a", "b"], ["a", "b"]])
    r = moa.run("Q")
    assert r.failures == [
        "layer 0 proposer b: timed out",
        "layer 1 proposer a: HTTP 503: down",
        "layer 1 proposer b: timed out",
    ]
    assert r.answers[:2] == [["1", None], [None, None]]
    assert "<a0>" in r.turns[-1].prompt and r.turns[-1].reads == ["a"]  # layer 1 failed: reads layer 0
    assert r.answer == "1" and r.stop == "aggregated"
    dead, backend = make({"a": "!error down", "agg": "never"}, [["a"]])
    r = dead.run("Q")
    assert (r.answer, r.stop, r.calls) == (None, "failed", 1)
    assert [c.meta["agent"] for c in backend.calls] == ["a"]


def test_qa_lines_format_renders_references_as_solved_lines():
    replies = {"a": " 85", "b": " 84", "agg": " 85"}
    data = {
        "backends": {"s": {"kind": "scripted", "replies": replies}},
        "layers": [[{"name": p, "backend": "s", "prompt_format": "qa_lines"} for p in "ab"]],
        "aggregator": {"name": "agg", "backend": "s", "prompt_format": "qa_lines"},
    }
    r = MoA(from_dict(MoAConfig, data)).run("Q: 37+48= A:")
    assert r.turns[-1].prompt == "Q: 37+48= A: 85\nQ: 37+48= A: 84\nQ: 37+48= A:"
    assert r.answer == "85"


def test_qa_lines_show_each_solution_text_on_one_line():
    replies = {"a": " 7+8=15,3+4+1=8\nso 85", "b": "no number", "agg": " 85"}
    data = {
        "backends": {"s": {"kind": "scripted", "replies": replies}},
        "layers": [[{"name": p, "backend": "s", "prompt_format": "qa_lines"} for p in "ab"]],
        "aggregator": {"name": "agg", "backend": "s", "prompt_format": "qa_lines"},
    }
    r = MoA(from_dict(MoAConfig, data)).run("Q: 37+48= A:")
    # newlines folded; b's reply has no answer and is left out
    assert r.turns[-1].prompt == "Q: 37+48= A: 7+8=15,3+4+1=8 so 85\nQ: 37+48= A:"


def test_config_errors():
    with pytest.raises(ConfigError) as err:
        from_dict(
            MoAConfig,
            {
                "backends": {},
                "layers": [[]],
                "aggregator": {"name": "g", "backend": "nope"},
                "layer_max_tokens": [1, 2],
            },
        )
    text = str(err.value)
    assert "at least one proposer" in text and "unknown backend 'nope'" in text and "layer_max_tokens" in text
