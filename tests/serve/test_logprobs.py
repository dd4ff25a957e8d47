"""``/v1/completions`` as remote ensemble members use it (vLLM's shape): token-id prompts, ``logprobs``
K, ``echo``, ``return_tokens_as_token_ids``, chat logprobs; and batched requests keep their own
sampling settings. Against ``lmfuse serve`` on 127.0.0.1, through the official ``openai`` client."""

from __future__ import annotations

import asyncio
import math

import httpx
import openai
import pytest
import torch

from lmfuse import zoo
from lmfuse.serve.testing import start_server

CONFIG = {
    "backends": {
        "base": {"kind": "hf", "model": "zoo:base"},
        "gen": {"kind": "hf", "model": "zoo:generalist"},
    },
    "models": {
        "base": {"method": "single", "backend": "base"},
        "gen": {"method": "single", "backend": "gen"},
    },
    "server": {"max_logprobs": 500},
}


@pytest.fixture(scope="module")
def url():
    with start_server(CONFIG) as base_url:
        yield base_url


@pytest.fixture(scope="module")
def base():
    return zoo.load("base")


def _client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key="EMPTY", max_retries=0)


def _log_softmax(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), -1)  # (seq, vocab)


def test_token_id_prompt_is_fed_as_is_and_greedy_matches_the_model(url, base):
    model, tok = base
    ids = tok("Q: 12+7= A:", add_special_tokens=False)["input_ids"]  # no BOS: the server must not add one
    out = _client(url).completions.create(
        model="base",
        prompt=ids,
        max_tokens=5,
        temperature=0,
        logprobs=0,
        extra_body={"return_tokens_as_token_ids": True},
    )
    assert out.usage.prompt_tokens == len(ids)
    got = [int(t.split(":")[1]) for t in out.choices[0].logprobs.tokens]
    # greedy by hand: argmax of the model's own next-token distribution, token after token
    seq = list(ids)
    for _ in got:
        nxt = int(_log_softmax(model, seq)[-1].argmax())
        seq.append(nxt)
        if nxt == tok.eos_token_id:
            break
    assert got == seq[len(ids) :][: len(got)]  # a generated EOS included, as vLLM reports it
    assert out.choices[0].text == tok.decode(got, skip_special_tokens=True)


def test_a_generated_eos_is_the_last_logprobs_token_as_vllm_reports_it(url, base):
    """vLLM keeps a generated EOS in ``logprobs`` (its text stays out of ``text``), so a remote ensemble
    member learns the EOS probability from the call that generated it."""
    model, tok = base
    eos, client = tok.eos_token_id, _client(url)
    ids = tok("Q: 12+7= A:", add_special_tokens=False)["input_ids"]
    kw = dict(model="base", temperature=0, extra_body={"return_tokens_as_token_ids": True})
    out = client.completions.create(prompt=ids, max_tokens=zoo.MAX_NEW_TOKENS, logprobs=3, **kw)
    ch = out.choices[0]
    got = [int(t.split(":")[1]) for t in ch.logprobs.tokens]
    assert ch.finish_reason == "stop" and got[-1] == eos and eos not in got[:-1]
    assert out.usage.completion_tokens == len(got)
    assert ch.text == tok.decode(got[:-1], skip_special_tokens=True)
    direct = _log_softmax(model, ids + got)
    for t, g in enumerate(got):
        assert ch.logprobs.token_logprobs[t] == pytest.approx(float(direct[len(ids) + t - 1, g]), abs=1e-4)
    assert f"token_id:{eos}" in ch.logprobs.top_logprobs[-1]
    # one step at the end, as a remote member asks: the one generated token is the EOS, with its logprob
    one = client.completions.create(prompt=ids + got[:-1], max_tokens=1, logprobs=5, **kw).choices[0]
    assert one.logprobs.tokens == [f"token_id:{eos}"] and one.text == ""
    assert one.logprobs.token_logprobs[0] == pytest.approx(float(direct[-2, eos]), abs=1e-4)
    # cut by the token cap or by a stop string: no EOS was generated, none is reported
    capped = client.completions.create(prompt=ids, max_tokens=len(got) - 1, logprobs=0, **kw).choices[0]
    assert capped.finish_reason == "length" and f"token_id:{eos}" not in capped.logprobs.tokens
    stop = ch.text[-1]
    cut = client.completions.create(
        prompt=ids, max_tokens=zoo.MAX_NEW_TOKENS, logprobs=0, stop=[stop], **kw
    ).choices[0]
    assert cut.finish_reason == "stop" and f"token_id:{eos}" not in cut.logprobs.tokens
    # chat logprobs end with the EOS too (its token text is the tokenizer's, e.g. "<eos>")
    msg = client.chat.completions.create(model="base", messages=[{"role": "user", "content": "Q: 12+7= A:"}],
                                         max_tokens=zoo.MAX_NEW_TOKENS, temperature=0, logprobs=True, top_logprobs=1)  # fmt: skip
    content = msg.choices[0].logprobs.content
    assert content[-1].token == tok.decode([eos])
    assert "".join(c.token for c in content[:-1]) == msg.choices[0].message.content


def test_echo_logprobs_equal_log_softmax_and_full_k_is_the_whole_distribution(url, base):
    model, tok = base
    vocab = model.config.vocab_size
    out = _client(url).completions.create(
        model="base",
        prompt="Q: 3*4= A:",
        max_tokens=3,
        temperature=0,
        echo=True,
        logprobs=vocab,
        extra_body={"return_tokens_as_token_ids": True},
    )
    ch = out.choices[0]
    lp = ch.logprobs
    ids = [int(t.split(":")[1]) for t in lp.tokens]
    prompt_ids = tok("Q: 3*4= A:")["input_ids"]
    assert ids[: len(prompt_ids)] == prompt_ids and ch.text.startswith("Q: 3*4= A:")
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    direct = _log_softmax(model, ids)
    for t in range(1, len(ids)):
        assert lp.token_logprobs[t] == pytest.approx(float(direct[t - 1, ids[t]]), abs=1e-4)
        top = lp.top_logprobs[t]
        assert len(top) == vocab  # every token of the vocabulary
        assert math.fsum(math.exp(v) for v in top.values()) == pytest.approx(1.0, abs=1e-4)
        for key, v in list(top.items())[:5]:
            assert v == pytest.approx(float(direct[t - 1, int(key.split(":")[1])]), abs=1e-4)
    assert lp.text_offset[0] == 0 and lp.text_offset == sorted(lp.text_offset)


def test_token_strings_and_top_k_without_token_ids(url, base):
    _, tok = base
    out = _client(url).completions.create(model="base", prompt="Q: 5+5= A:", max_tokens=4, temperature=0,
                                          logprobs=3)  # fmt: skip
    lp = out.choices[0].logprobs
    eos = tok.decode([tok.eos_token_id])
    assert "".join(lp.tokens) in (out.choices[0].text, out.choices[0].text + eos)  # + a generated EOS
    for t, top in enumerate(lp.top_logprobs):
        assert 3 <= len(top) <= 4 and lp.tokens[t] in top
        assert lp.token_logprobs[t] == pytest.approx(top[lp.tokens[t]])
        assert lp.token_logprobs[t] <= 0


def test_batch_of_token_id_prompts_and_a_different_tokenizer(url):
    client = _client(url)
    out = client.completions.create(model="gen", prompt=[[5, 6, 7], [8, 9]], max_tokens=2, temperature=0,
                                    logprobs=1)  # fmt: skip
    assert [c.index for c in out.choices] == [0, 1]
    assert out.usage.prompt_tokens == 5


def test_logprobs_above_the_limit_and_out_of_range_values_are_400(url):
    client = _client(url)
    with pytest.raises(openai.BadRequestError, match="at most 500"):
        client.completions.create(model="base", prompt="x", max_tokens=1, logprobs=501)
    for bad in ({"max_tokens": 0}, {"max_tokens": -5}, {"temperature": -1}, {"top_p": 0}):
        with pytest.raises(openai.BadRequestError):
            client.completions.create(model="base", prompt="Q: 1+1= A:", **{"max_tokens": 2, **bad})
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.chat.completions.create(
            model="base", messages=[{"role": "user", "content": "hi"}], max_tokens=0
        )
    with pytest.raises(openai.BadRequestError, match="256 tokens"):  # the zoo's context length
        client.completions.create(model="base", prompt="Q: 1+1= A:" * 30, max_tokens=2)


def test_chat_logprobs_have_openais_shape(url):
    out = _client(url).chat.completions.create(
        model="base",
        messages=[{"role": "user", "content": "Q: 2+2= A:"}],
        max_tokens=3,
        temperature=0,
        logprobs=True,
        top_logprobs=2,
    )
    content = out.choices[0].logprobs.content
    text = "".join(c.token for c in content)
    assert text.removesuffix("<eos>") == out.choices[0].message.content  # a generated EOS is listed last
    for c in content:
        assert len(c.top_logprobs) == 2 and c.bytes == list(c.token.encode())
        assert c.logprob <= c.top_logprobs[0].logprob + 1e-6


def test_concurrent_greedy_requests_beside_sampled_ones_return_the_greedy_text(url):
    """Issue 15 item 4: one hot sampled request batched with greedy ones must not change them."""
    prompt = "Q: 23+19= A:"
    expected = _client(url).completions.create(model="base", prompt=prompt, max_tokens=8, temperature=0)
    client = openai.AsyncOpenAI(base_url=url, api_key="EMPTY", max_retries=0)

    async def go():
        calls = [client.completions.create(model="base", prompt=prompt, max_tokens=8, temperature=0)
                 for _ in range(12)]  # fmt: skip
        calls[3:3] = [client.completions.create(model="base", prompt=prompt, max_tokens=8, temperature=50,
                                                top_p=1) for _ in range(3)]  # fmt: skip
        try:
            return await asyncio.gather(*calls)
        finally:
            await client.close()

    outs = asyncio.run(go())
    greedy = [o for i, o in enumerate(outs) if not 3 <= i < 6]
    assert [o.choices[0].text for o in greedy] == [expected.choices[0].text] * 12
    hot = [o.choices[0].text for i, o in enumerate(outs) if 3 <= i < 6]
    assert any(h != expected.choices[0].text for h in hot)  # T=50 is (near) uniform: not the greedy text


def test_seeded_sampling_is_reproducible(url):
    client = _client(url)
    kw = dict(model="base", prompt="Q: 7*8= A:", max_tokens=6, temperature=2.0, seed=11)
    assert client.completions.create(**kw).choices[0].text == client.completions.create(**kw).choices[0].text


def test_bad_bodies_and_paths_get_openai_errors(url):
    r = httpx.post(f"{url}/completions", content=b'{"model": "base", "prompt": "caf\xe9"}',
                   headers={"content-type": "application/json"})  # fmt: skip
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    r = httpx.get(f"{url}/nope")
    assert r.status_code == 404 and "error" in r.json() and "detail" not in r.json()
