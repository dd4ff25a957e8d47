"""End to end: EoT through the ``openai`` backend against real HTTP servers on 127.0.0.1 (lmfuse serve),
one of them flaky (500s, then a hung call that times out: retried), one that stays down (reported).
The run must equal the same EoT on the same models called in-process."""

from __future__ import annotations

import pytest

from lmfuse import zoo
from lmfuse.backends.hf import HFBackend
from lmfuse.backends.scripted import ScriptedBackend
from lmfuse.core.config import from_dict
from lmfuse.exchange.config import EoTConfig
from lmfuse.exchange.eot import EoT
from lmfuse.serve.app import create_app
from lmfuse.serve.faults import Faults
from lmfuse.serve.server import ServerThread

QUESTION = "Q: 37+48= A:"


@pytest.fixture(scope="module")
def models():
    """Zoo models behind ids m0, m1, m2."""
    return {f"m{i}": HFBackend(*zoo.load(name), name=name) for i, name in enumerate(("base", "add", "sub"))}


def eot_config(backends: dict) -> EoTConfig:
    agents = [
        {
            "name": "A",
            "backend": "good",
            "model": "m0",
            "prompt_format": "qa_lines",
            "max_tokens": zoo.MAX_NEW_TOKENS,
        },
        {
            "name": "B",
            "backend": "good",
            "model": "m1",
            "max_tokens": zoo.MAX_NEW_TOKENS,
            "system": "You are careful.",
        },
        {
            "name": "C",
            "backend": "flaky",
            "model": "m2",
            "prompt_format": "qa_lines",
            "max_tokens": zoo.MAX_NEW_TOKENS,
        },
        {
            "name": "D",
            "backend": "down",
            "model": "m0",
            "prompt_format": "qa_lines",
            "max_tokens": zoo.MAX_NEW_TOKENS,
        },
    ]
    rules = {"topology": "memory", "max_rounds": 3, "early_exit": False, "stop_on_unanimity": False}
    return from_dict(EoTConfig, {"backends": backends, "agents": agents, **rules})


def test_eot_over_http_with_a_flaky_and_a_dead_server_matches_in_process_run(models):
    # The hang (4 s) is twice the flaky member's timeout (2 s), which is many times a real call to the
    # tiny model even on a loaded machine; the counts below do not assume no real call is ever retried.
    flaky_faults = Faults(fail_first=2, fail_status=500, hang_first=1, hang_seconds=4.0)
    good = ServerThread(create_app({"m0": models["m0"], "m1": models["m1"]})).start()
    flaky = ServerThread(create_app({"m2": models["m2"]}, flaky_faults)).start()
    down = ServerThread(create_app({"m0": models["m0"]}, Faults(down=True))).start()
    try:
        http = {
            "good": {"kind": "openai", "base_url": good.base_url},
            "flaky": {"kind": "openai", "base_url": flaky.base_url, "timeout": 2.0, "backoff": 0.01},
            "down": {"kind": "openai", "base_url": down.base_url, "max_retries": 2, "backoff": 0.01},
        }
        result = EoT(eot_config(http)).run(QUESTION, "add-1")
    finally:
        for s in (good, flaky, down):
            s.stop()

    # The flaky server's first call failed twice, hung once (timed out), then succeeded: nothing is
    # reported. Every request the flaky server saw is an attempt its client counted, and its first three
    # requests were the scripted faults, so round 0 of agent C took at least 4 attempts.
    c_turns = [t for t in result.turns if t.agent == "C"]
    assert [t.round for t in c_turns] == [0, 1, 2] and all(t.error is None for t in c_turns)
    assert c_turns[0].attempts >= 4 and flaky_faults.seen == sum(t.attempts for t in c_turns)
    # The dead server is reported every round, after its retries.
    assert result.failures == [
        f"round {r}, agent D: HTTP 503: injected failure (request {3 * r + 3})" for r in range(3)
    ]
    assert all(t.attempts == 3 for t in result.turns if t.agent == "D")
    assert all(t.prompt_tokens > 0 and t.completion_tokens > 0 for t in result.turns if t.agent != "D")

    # Over HTTP, agent A's first answer is zoo:base's own answer to the question.
    base = models["m0"]
    own = zoo.extract_number(zoo.hf_generate_fn(base.model, base.tokenizer)([QUESTION])[0])
    assert result.answers[0][0] == own is not None

    # Same agents, same models, called in-process (D scripted to fail): identical prompts and replies.
    local_cfg = eot_config(http)  # the same recipe; every backend is replaced by an in-process one
    per_agent = {
        "good": _Routed({"m0": models["m0"], "m1": models["m1"]}),
        "flaky": models["m2"],
        "down": ScriptedBackend({"D": "!error down"}),
    }
    local = EoT(local_cfg, backends=per_agent).run(QUESTION, "add-1")
    assert result.answers == local.answers and result.answer == local.answer
    http_turns = [(t.round, t.agent, t.prompt, t.reply) for t in result.turns]
    assert http_turns == [(t.round, t.agent, t.prompt, t.reply) for t in local.turns]
    assert [t.reads for t in result.turns if t.round == 2] == [
        ["B", "C"],
        ["A", "C"],
        ["A", "B"],
        ["A", "B", "C"],
    ]


class _Routed:
    """In-process stand-in for a server hosting several models: route each request by ``model``."""

    name = "routed"

    def __init__(self, by_model: dict) -> None:
        self.by_model = by_model

    async def generate(self, requests):
        out = []
        for r in requests:
            out += await self.by_model[r.model].generate([r])
        return out

    async def aclose(self) -> None:
        return None
