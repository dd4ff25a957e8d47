"""The ``openai`` backend against real servers on 127.0.0.1: retries, timeouts, a server that stays
down, a port nobody listens on, concurrency bounds, and the API key kept out of sight."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from lmfuse.backends.base import Request
from lmfuse.backends.hf import HFBackend
from lmfuse.backends.openai_api import OpenAIBackend
from lmfuse.errors import ConfigError
from lmfuse.serve.app import ServerOptions, create_app
from lmfuse.serve.faults import Faults
from lmfuse.serve.limits import Limits
from lmfuse.serve.server import ServerThread
from lmfuse.testing import char_tokenizer, tiny_model


@pytest.fixture(scope="module")
def hf():
    tok = char_tokenizer()
    return HFBackend(tiny_model("llama", vocab_size=len(tok), seed=1), tok, name="tiny")


def call(backend: OpenAIBackend, requests: list[Request]):
    async def go():
        try:
            return await backend.generate(requests)
        finally:
            await backend.aclose()

    return asyncio.run(go())


def req(prompt: str = "Q: 2+2= A:") -> Request:
    return Request(prompt=prompt, max_tokens=4)


@pytest.mark.parametrize("status", [500, 429, 503])
def test_retries_transient_http_errors(hf, status):
    faults = Faults(fail_first=2, fail_status=status)
    # a 429 carries Retry-After (0.2 s here, 1 s by default): the client waits that long, not its backoff
    options = ServerOptions(limits=Limits(retry_after=0.2))
    with ServerThread(create_app({"tiny": hf}, faults, options=options)) as s:
        start = time.perf_counter()
        (reply,) = call(OpenAIBackend(s.base_url, model="tiny", max_retries=3, backoff=0.01), [req()])
        waited = time.perf_counter() - start
    expected = hf.generate_batch([req()])[0]
    assert reply.ok and reply.attempts == 3 and faults.seen == 3
    if status == 429:
        assert waited >= 2 * 0.2  # two refusals, each honoured
    assert reply.text == expected.text and reply.completion_tokens == expected.completion_tokens > 0


def test_retries_a_timed_out_call(hf):
    faults = Faults(hang_first=1, hang_seconds=1.2)
    with ServerThread(create_app({"tiny": hf}, faults)) as s:
        start = time.perf_counter()
        (reply,) = call(OpenAIBackend(s.base_url, model="tiny", timeout=0.3, backoff=0.01), [req()])
        assert time.perf_counter() - start < 1.1
    assert reply.ok and reply.attempts == 2


def test_a_server_that_stays_down_is_reported_not_raised(hf):
    with ServerThread(create_app({"tiny": hf}, Faults(down=True))) as s:
        replies = call(
            OpenAIBackend(s.base_url, model="tiny", max_retries=2, backoff=0.01), [req(), req("x")]
        )
    assert [r.ok for r in replies] == [False, False]
    assert all(r.attempts == 3 and r.error.startswith("HTTP 503") and r.text == "" for r in replies)


def test_nobody_listening_is_a_connection_error():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again before the call: connection refused
    (reply,) = call(
        OpenAIBackend(f"http://127.0.0.1:{port}/v1", model="m", max_retries=1, backoff=0.01), [req()]
    )
    assert not reply.ok and reply.attempts == 2 and reply.error.startswith("connection failed")


def test_client_errors_are_not_retried(hf):
    faults = Faults()
    with ServerThread(create_app({"tiny": hf}, faults)) as s:
        (reply,) = call(OpenAIBackend(s.base_url, model="other", backoff=0.01), [req()])
    assert reply.attempts == 1 and reply.error.startswith("HTTP 404") and "served: tiny" in reply.error


def test_concurrency_is_bounded(hf):
    latency = 0.25
    with ServerThread(create_app({"tiny": hf}, Faults(latency=latency))) as s:
        backend = OpenAIBackend(s.base_url, model="tiny", max_concurrency=2)
        start = time.perf_counter()
        replies = call(backend, [req(f"Q: {i}+1= A:") for i in range(6)])
        elapsed = time.perf_counter() - start
    assert all(r.ok for r in replies)
    assert elapsed >= 3 * latency  # 6 calls, 2 at a time


def test_api_key_from_env_is_sent_and_never_shown(hf, monkeypatch):
    monkeypatch.delenv("LMFUSE_TEST_KEY", raising=False)
    with pytest.raises(ConfigError, match="LMFUSE_TEST_KEY is not set"):
        OpenAIBackend("http://127.0.0.1:1/v1", api_key_env="LMFUSE_TEST_KEY")
    monkeypatch.setenv("LMFUSE_TEST_KEY", "tok-123-secret")
    with ServerThread(create_app({"tiny": hf}, api_key="tok-123-secret")) as s:
        good = OpenAIBackend(s.base_url, model="tiny", api_key_env="LMFUSE_TEST_KEY")
        assert "tok-123" not in repr(good)
        (ok,) = call(good, [req()])
        monkeypatch.setenv("LMFUSE_TEST_KEY", "tok-123-wrong")
        (bad,) = call(OpenAIBackend(s.base_url, model="tiny", api_key_env="LMFUSE_TEST_KEY"), [req()])
    assert ok.ok
    assert bad.error.startswith("HTTP 401") and bad.attempts == 1 and "tok-123" not in bad.error
