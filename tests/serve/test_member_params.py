"""Request parameters reach the members of fused models: ``temperature``, ``top_p`` and ``max_tokens``
everywhere, ``stop`` where the member's reply is the answer (vote members, the MoA aggregator), and
``seed`` as a distinct seed per member call derived from the request's. Members are real
OpenAI-compatible servers on 127.0.0.1 that record every request they get."""

from __future__ import annotations

import openai
import pytest

from lmfuse.backends.scripted import ScriptedBackend
from lmfuse.serve.app import create_app
from lmfuse.serve.server import ServerThread
from lmfuse.serve.testing import start_server

NAMES = ["r1", "r2", "r3"]
ASK = dict(messages=[{"role": "user", "content": "What is 6*7?"}], max_tokens=30, temperature=0.7,
           top_p=0.9, stop=["END"])  # fmt: skip


@pytest.fixture(scope="module")
def served():
    recorders = {n: ScriptedBackend(lambda r: "The answer is 42.") for n in NAMES}
    with ServerThread(create_app(recorders), grace=0.1) as members:
        backends = {n: {"kind": "openai", "base_url": members.base_url, "model": n, "max_retries": 0}
                    for n in NAMES}  # fmt: skip
        models = {
            "vote3": {"method": "vote", "members": NAMES, "similarity": "answer"},
            "moa3": {"method": "moa", "proposers": NAMES[:2], "aggregator": "r3"},
            "eot3": {"method": "eot", "agents": NAMES, "max_rounds": 2, "early_exit": False},
        }
        with start_server({"backends": backends, "models": models}) as url:
            yield openai.OpenAI(base_url=url, api_key="EMPTY", max_retries=0), recorders


def _ask(served, model: str, **kw) -> dict:
    """``{member: [requests it got]}`` for one request to ``model``."""
    client, recorders = served
    for b in recorders.values():
        b.calls.clear()
    client.chat.completions.create(model=model, **{**ASK, **kw})
    return {n: list(b.calls) for n, b in recorders.items()}


def _all(got: dict) -> list:
    return [r for reqs in got.values() for r in reqs]


@pytest.mark.parametrize("model", ["vote3", "moa3", "eot3"])
def test_sampling_parameters_and_distinct_derived_seeds_reach_every_member_call(served, model):
    got = _ask(served, model, seed=123)
    calls = _all(got)
    assert calls and all(r.temperature == 0.7 and r.top_p == 0.9 and r.max_tokens == 30 for r in calls)
    seeds = [r.seed for r in calls]
    assert None not in seeds and len(set(seeds)) == len(seeds)  # no two member calls sample alike
    assert 123 not in seeds  # derived, not the request's seed passed to everyone
    again = _ask(served, model, seed=123)
    assert sorted(r.seed for r in _all(again)) == sorted(seeds)  # the same request: the same seeds
    other = _ask(served, model, seed=124)
    assert not set(r.seed for r in _all(other)) & set(seeds)
    assert all(r.seed is None for r in _all(_ask(served, model)))  # unseeded stays unseeded


def test_stop_goes_where_the_reply_is_the_answer(served):
    assert all(r.stop == ["END"] for r in _all(_ask(served, "vote3")))
    moa = _ask(served, "moa3")
    assert [r.stop for r in moa["r3"]] == [["END"]]  # the aggregator: its reply is the answer
    assert all(r.stop is None for n in ("r1", "r2") for r in moa[n])  # proposers: full replies
    assert all(r.stop is None for r in _all(_ask(served, "eot3")))  # agents read each other's full replies
