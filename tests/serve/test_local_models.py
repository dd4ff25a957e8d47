"""Local models behind ``lmfuse serve``: token-by-token streaming of a zoo model equals its
non-streamed reply, the ``ensemble`` fusion equals ``Ensemble.generate`` called directly, and the
embedded default declares the zoo and one fusion of each kind."""

from __future__ import annotations

import openai
import pytest

from lmfuse import zoo
from lmfuse.ensemble import Ensemble
from lmfuse.serve.config import default_config, parse
from lmfuse.serve.testing import start_server

Q = "Q: 37+48= A:"


@pytest.fixture(scope="module")
def url():
    cfg = {
        "backends": {"add": {"kind": "hf", "model": "zoo:add"}},
        "models": {"add": {"method": "single", "backend": "add", "max_model_len": 1024},
                   "ens": {"method": "ensemble", "members": ["zoo:base", "zoo:add"], "weights": [0.3, 0.7]},
                   "vote1": {"method": "vote", "members": ["add"], "samples": 3, "quorum": 1}},
    }  # fmt: skip
    with start_server(cfg) as base_url:
        yield base_url


def test_streaming_a_local_model_token_by_token_equals_the_plain_reply(url):
    c = openai.OpenAI(base_url=url, api_key="x", max_retries=0)
    for prompt in (Q, "Q: 9*9= A:", "Q: 100-1= A:"):
        plain = c.completions.create(model="add", prompt=prompt, max_tokens=zoo.MAX_NEW_TOKENS, temperature=0)
        chunks = list(
            c.completions.create(
                model="add", prompt=prompt, max_tokens=zoo.MAX_NEW_TOKENS, temperature=0, stream=True
            )
        )
        pieces = [ch.choices[0].text for ch in chunks if ch.choices[0].text]
        assert "".join(pieces) == plain.choices[0].text
        assert chunks[-1].choices[0].finish_reason == plain.choices[0].finish_reason
    many = list(
        c.completions.create(model="add", prompt=Q, max_tokens=zoo.MAX_NEW_TOKENS, temperature=0, stream=True)
    )
    text = "".join(ch.choices[0].text for ch in many)
    assert text.endswith(" so 85") and [ch.choices[0].text for ch in many if ch.choices[0].text] == list(text)


def test_stop_strings_cut_streamed_and_plain_replies_alike(url):
    c = openai.OpenAI(base_url=url, api_key="x", max_retries=0)
    plain = c.completions.create(model="add", prompt=Q, max_tokens=12, temperature=0)
    stop = plain.choices[0].text.strip()[-1]  # the last digit of the answer
    cut = c.completions.create(model="add", prompt=Q, max_tokens=12, temperature=0, stop=[stop])
    streamed = list(c.completions.create(model="add", prompt=Q, max_tokens=12, temperature=0, stop=[stop],
                                         stream=True))  # fmt: skip
    assert (
        cut.choices[0].text == plain.choices[0].text.split(stop)[0] and cut.choices[0].finish_reason == "stop"
    )
    assert "".join(ch.choices[0].text for ch in streamed) == cut.choices[0].text


def test_ensemble_model_equals_ensemble_generate(url):
    direct = Ensemble(["zoo:base", "zoo:add"], weights=[0.3, 0.7]).generate([Q], max_new_tokens=8)[0]
    c = openai.OpenAI(base_url=url, api_key="x", max_retries=0)
    out = c.chat.completions.create(model="ens", messages=[{"role": "user", "content": Q}], max_tokens=8,
                                    temperature=0)  # fmt: skip
    assert out.choices[0].message.content == direct
    assert out.model_extra["lmfuse"]["ensemble"]["weights"] == pytest.approx([0.3, 0.7])
    stream = c.completions.create(model="ens", prompt=Q, max_tokens=8, temperature=0, stream=True)
    assert "".join(ch.choices[0].text for ch in stream) == direct


def test_ensemble_logprobs_are_the_combined_distributions_and_streams_match(url):
    ens = Ensemble(["zoo:base", "zoo:add"], weights=[0.3, 0.7])
    direct = ens.complete([Q], max_new_tokens=6, logprobs=3)[0]
    c = openai.OpenAI(base_url=url, api_key="x", max_retries=0)
    out = c.completions.create(model="ens", prompt=Q, max_tokens=6, temperature=0, logprobs=3)
    lp = out.choices[0].logprobs
    assert out.choices[0].text == direct.text and out.choices[0].finish_reason == direct.finish_reason
    assert lp.tokens == direct.tokens and lp.token_logprobs == pytest.approx(direct.token_logprobs)
    assert [list(t.items()) for t in lp.top_logprobs] == [
        [(s, pytest.approx(v)) for s, v in t] for t in direct.top_logprobs
    ]
    assert (
        out.usage.completion_tokens == direct.completion_tokens
        and out.usage.prompt_tokens == direct.prompt_tokens
    )
    chunks = list(c.chat.completions.create(model="ens", messages=[{"role": "user", "content": Q}], max_tokens=6,
                                            temperature=0, stream=True, logprobs=True, top_logprobs=2))  # fmt: skip
    steps = [ch for ch in chunks if ch.choices and ch.choices[0].logprobs]
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == direct.text
    assert [ch.choices[0].logprobs.content[0].logprob for ch in steps] == pytest.approx(direct.token_logprobs)
    with pytest.raises(openai.BadRequestError, match="no token ids"):
        c.completions.create(model="ens", prompt=Q, max_tokens=2, echo=True, logprobs=1)


def test_finish_reason_is_the_winners_length_when_it_was_cut_off(url):
    c = openai.OpenAI(base_url=url, api_key="x", max_retries=0)
    cut = c.chat.completions.create(model="vote1", messages=[{"role": "user", "content": Q}], max_tokens=2,
                                    temperature=0)  # fmt: skip
    full = c.chat.completions.create(model="vote1", messages=[{"role": "user", "content": Q}], max_tokens=zoo.MAX_NEW_TOKENS,
                                     temperature=0)  # fmt: skip
    assert cut.choices[0].finish_reason == "length" and full.choices[0].finish_reason == "stop"
    assert full.choices[0].message.content.startswith(cut.choices[0].message.content)
    assert len(full.model_extra["lmfuse"]["usage"]) == 3  # samples: 3 replies from the one member


def test_embedded_default_serves_the_zoo_and_one_fusion_of_each_kind():
    cfg = parse(default_config())
    methods = {m: raw["method"] for m, raw in cfg.models.items()}
    assert {m for m, k in methods.items() if k == "single"} == {"base", "add", "sub", "mul", "generalist"}
    assert {methods[m] for m in ("vote-zoo", "moa-zoo", "eot-zoo", "ensemble-zoo")} == {
        "vote",
        "moa",
        "eot",
        "ensemble",
    }
