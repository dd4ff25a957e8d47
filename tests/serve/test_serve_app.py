"""lmfuse's OpenAI-compatible server, driven over HTTP on 127.0.0.1 by the official ``openai`` client."""

from __future__ import annotations

import asyncio
import time

import httpx
import openai
import pytest

from lmfuse.backends.base import Request
from lmfuse.backends.hf import HFBackend
from lmfuse.serve.app import create_app
from lmfuse.serve.faults import Faults
from lmfuse.serve.server import ServerThread
from lmfuse.testing import char_tokenizer, tiny_model


@pytest.fixture(scope="module")
def tiny():
    tok = char_tokenizer()
    return tiny_model("llama", vocab_size=len(tok), seed=3), tok


def test_completions_match_direct_generation_and_report_usage(tiny):
    direct = HFBackend(*tiny, name="d")
    prompts = ["Q: 12+7= A:", "Q: 3*4= A:", "hello"]
    expected = direct.generate_batch([Request(prompt=p, max_tokens=6) for p in prompts])
    with ServerThread(create_app({"tiny": HFBackend(*tiny)})) as s:
        client = openai.OpenAI(base_url=s.base_url, api_key="EMPTY", max_retries=0)
        assert [m.id for m in client.models.list().data] == ["tiny"]
        out = client.completions.create(model="tiny", prompt=prompts, max_tokens=6, temperature=0)
        assert [c.text for c in out.choices] == [e.text for e in expected]
        assert out.usage.prompt_tokens == sum(e.prompt_tokens for e in expected)
        assert out.usage.completion_tokens == sum(e.completion_tokens for e in expected)
        chat = client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "Q: 12+7= A:"}], max_tokens=6, temperature=0
        )
        assert chat.choices[0].message.content == expected[0].text  # no chat template: contents joined
        assert chat.choices[0].finish_reason in ("stop", "length")


def test_errors_use_openai_shape(tiny):
    with ServerThread(create_app({"tiny": HFBackend(*tiny)})) as s:
        client = openai.OpenAI(base_url=s.base_url, api_key="EMPTY", max_retries=0)
        with pytest.raises(openai.NotFoundError, match="model 'gpt' not found; served: tiny"):
            client.completions.create(model="gpt", prompt="x")
        with pytest.raises(openai.BadRequestError, match="n: Input should be greater than or equal to 1"):
            client.completions.create(model="tiny", prompt="x", n=0)
        r = httpx.post(f"{s.base_url}/chat/completions", json={"model": "tiny"})
        assert r.status_code == 400 and "messages" in r.json()["error"]["message"]


def test_api_key_is_required_when_set(tiny):
    with ServerThread(create_app({"tiny": HFBackend(*tiny)}, api_key="s3cret")) as s:
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=s.base_url, api_key="wrong", max_retries=0).models.list()
        assert openai.OpenAI(base_url=s.base_url, api_key="s3cret").models.list().data[0].id == "tiny"


def test_concurrent_requests_share_latency_and_are_batched(tiny):
    backend = HFBackend(*tiny)
    latency = 0.4
    with ServerThread(create_app({"tiny": backend}, Faults(latency=latency))) as s:
        client = openai.AsyncOpenAI(base_url=s.base_url, api_key="EMPTY", max_retries=0)

        async def go():
            calls = [
                client.completions.create(model="tiny", prompt=f"Q: {i}+1= A:", max_tokens=4)
                for i in range(8)
            ]
            try:
                return await asyncio.gather(*calls)
            finally:
                await client.close()

        start = time.perf_counter()
        out = asyncio.run(go())
        elapsed = time.perf_counter() - start
    assert len(out) == 8
    assert elapsed < 8 * latency / 2, elapsed  # the waits overlap (serial would be 3.2 s)
    assert backend.batches < 8  # requests arriving together share a generate call


def test_fault_schedule():
    f = Faults(fail_first=2, fail_status=429, hang_first=1, hang_seconds=0.01)

    async def go():
        return [await f.apply() for _ in range(4)]

    assert asyncio.run(go()) == [429, 429, None, None]
    assert asyncio.run(Faults(down=True).apply()) == 503
    assert Faults(fail_status=200).validate()
