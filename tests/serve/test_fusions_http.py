"""Every fusion served as one model, driven by the official ``openai`` client (sync and async) against
``lmfuse serve`` on 127.0.0.1, over real member servers (``conftest.py``): full texts, streaming, ``n``,
multi-turn, quorum met and not met, a hanging member, unknown models and bad payloads."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest

from lmfuse.serve.testing import start_server

USER = [{"role": "user", "content": "What is 6*7?"}]


def remote(url: str, **kw) -> dict:
    return {"kind": "openai", "base_url": url, "model": "m", "max_retries": 0, **kw}


@pytest.fixture(scope="module")
def url(members):
    backends = {n: remote(u) for n, u in members.items() if not n.startswith("_")}
    models = {
        "a": {"method": "single", "backend": "a"},
        "slow": {"method": "single", "backend": "slow"},
        "vote3": {
            "method": "vote",
            "members": ["a", "b", "c"],
            "similarity": "answer",
            "similarity_options": {"answer": {"kind": "number"}},
            "quorum": 2,
        },
        "vote-down": {"method": "vote", "members": ["a", "b", "down"], "similarity": "answer", "quorum": 2},
        "vote-lost": {"method": "vote", "members": ["a", "down", "hang"], "quorum": 2, "timeout": 0.5},
        "moa3": {"method": "moa", "proposers": ["a", "b", "c"], "aggregator": "b", "quorum": 2},
        "moa-echo": {"method": "moa", "proposers": ["a", "c"], "aggregator": "echo", "quorum": 2},
        "eot3": {"method": "eot", "agents": ["a", "b", "c"], "max_rounds": 2, "quorum": 2},
        "echo": {"method": "single", "backend": "echo"},
    }
    cfg = {"backends": backends, "models": models, "server": {"max_input_chars": 2000}}
    with start_server(cfg) as base_url:
        yield base_url


@pytest.fixture(scope="module")
def client(url):
    return openai.OpenAI(base_url=url, api_key="EMPTY", max_retries=0)


def test_models_are_listed_with_their_method(client):
    ids = {m.id: m.owned_by for m in client.models.list().data}
    assert ids["vote3"] == "lmfuse:vote" and ids["moa3"] == "lmfuse:moa" and ids["a"] == "lmfuse:single"


def test_vote_returns_the_winners_full_text_and_the_lmfuse_field(client):
    out = client.chat.completions.create(model="vote3", messages=USER, max_tokens=20)
    assert out.choices[0].message.content == "The answer is 42."  # a and b agree on 42; a comes first
    assert out.choices[0].finish_reason == "stop"
    info = out.model_extra["lmfuse"]
    assert info["method"] == "vote" and sorted(info["members"]) == ["a", "b", "c"] and info["failed"] == []
    assert info["vote"]["winner"] == "a" and info["vote"]["answers"] == ["42", "42", "7"]
    assert out.usage.completion_tokens == sum(u["completion_tokens"] for u in info["usage"]) > 0


def test_quorum_met_lists_the_failed_member_and_quorum_missed_is_502(client):
    out = client.chat.completions.create(model="vote-down", messages=USER, max_tokens=20)
    info = out.model_extra["lmfuse"]
    assert out.choices[0].message.content.endswith("42.") and info["failed"][0]["member"] == "down"
    assert "503" in info["failed"][0]["error"]
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model="vote-lost", messages=USER, max_tokens=20)
    assert err.value.status_code == 502
    msg = err.value.body["message"]
    assert "1 of 3 members answered, quorum is 2" in msg and "down (HTTP 503" in msg
    assert "hang (timed out after 0.5 s)" in msg


def test_moa_returns_the_aggregators_full_text_streamed_or_not(client):
    out = client.chat.completions.create(model="moa3", messages=USER, max_tokens=20)
    assert out.choices[0].message.content == "Adding up, I think the answer is 42 here."
    info = out.model_extra["lmfuse"]
    assert info["moa"]["answer"] == "42" and len(info["usage"]) == 4  # 3 proposers + the aggregator
    chunks = list(client.chat.completions.create(model="moa3", messages=USER, max_tokens=20, stream=True,
                                                 stream_options={"include_usage": True}))  # fmt: skip
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == out.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage.total_tokens == out.usage.total_tokens


def test_multi_turn_conversations_reach_the_members(client):
    convo = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "first question"},
             {"role": "assistant", "content": "first answer"}, {"role": "user", "content": "second question"}]  # fmt: skip
    single = (
        client.chat.completions.create(model="echo", messages=convo, max_tokens=50).choices[0].message.content
    )
    assert all(m["content"] in single for m in convo)
    moa = (
        client.chat.completions.create(model="moa-echo", messages=convo, max_tokens=50)
        .choices[0]
        .message.content
    )
    assert "first answer" in moa and "second question" in moa and "The answer is 7." in moa


def test_eot_answers_with_the_full_reply_of_an_agent_holding_the_answer(client):
    out = client.chat.completions.create(model="eot3", messages=USER, max_tokens=20)
    info = out.model_extra["lmfuse"]["eot"]
    assert info["answer"] == "42" and info["rounds"] == 2 and info["stop"] == "majority"
    assert out.choices[0].message.content == "The answer is 42."


def test_n_choices_and_completions_endpoint(client):
    out = client.chat.completions.create(model="vote3", messages=USER, max_tokens=20, n=3)
    assert [c.index for c in out.choices] == [0, 1, 2]
    assert len(out.model_extra["lmfuse"]["usage"]) == 9  # 3 fusions of 3 members
    comp = client.completions.create(model="a", prompt=["x", "y"], max_tokens=5, n=2)
    assert [c.index for c in comp.choices] == [0, 1, 2, 3] and {c.text for c in comp.choices} == {
        "The answer is 42."
    }


def test_async_client_streams_concurrently(url):
    async def go():
        async with openai.AsyncOpenAI(base_url=url, api_key="EMPTY", max_retries=0) as c:

            async def one(model):
                s = await c.chat.completions.create(model=model, messages=USER, max_tokens=20, stream=True)
                return "".join([ch.choices[0].delta.content or "" async for ch in s if ch.choices])

            return await asyncio.gather(one("vote3"), one("moa3"), one("eot3"), one("a"))

    assert asyncio.run(go()) == ["The answer is 42.", "Adding up, I think the answer is 42 here.",
                                 "The answer is 42.", "The answer is 42."]  # fmt: skip


def test_client_disconnect_mid_stream_cancels_the_member_call(client, members):
    slow = members["_slow"]
    stream = client.chat.completions.create(model="slow", messages=USER, max_tokens=50, stream=True)
    got = []
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            got.append(chunk.choices[0].delta.content)
        if len(got) == 3:
            break
    stream.close()
    deadline = asyncio.run(_wait(slow.cancelled, 5.0))
    assert deadline, "the member's stream was not cancelled after the client left"
    assert slow.sent < slow.chunks


async def _wait(event: asyncio.Event, timeout: float) -> bool:
    for _ in range(int(timeout / 0.05)):
        if event.is_set():
            return True
        await asyncio.sleep(0.05)
    return event.is_set()


def test_unknown_model_and_bad_payloads_are_openai_errors(client, url):
    with pytest.raises(openai.NotFoundError, match="model 'gpt-4' not found; served: a, slow"):
        client.chat.completions.create(model="gpt-4", messages=USER)
    cases = [
        (b"{not json", "invalid request body"),
        (b'{"model": "a", "messages": "hi"}', "messages"),
        (
            b'{"model": "a", "messages": [{"role": "user", "content": "x"}], "max_tokens": "many"}',
            "max_tokens",
        ),
        (b'{"model": "a", "messages": [{"role": "user", "content": "x"}], "n": 0}', "n"),
        (b'{"model": "a", "messages": []}', "messages"),
    ]
    for body, word in cases:
        r = httpx.post(f"{url}/chat/completions", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 400, body
        err = r.json()["error"]
        assert err["type"] == "invalid_request_error" and word in err["message"]
    with pytest.raises(openai.BadRequestError, match="at most 2000"):
        client.chat.completions.create(model="vote3", messages=[{"role": "user", "content": "x" * 2001}])
    with pytest.raises(openai.BadRequestError, match="does not offer logprobs"):
        client.chat.completions.create(model="vote3", messages=USER, logprobs=True)
    r = httpx.delete(f"{url}/models")
    assert r.status_code == 405 and "error" in r.json()
