"""Server limits and security against real servers on 127.0.0.1: API keys (several), the queue limit
with 429 + Retry-After, injected 429s typed as rate limits, and the ``lmfuse serve`` process itself:
it prints "ready" when it is, finishes in-flight requests on SIGTERM and refuses new ones."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

from lmfuse.backends.scripted import ScriptedBackend
from lmfuse.serve.app import ServerOptions, create_app
from lmfuse.serve.faults import Faults
from lmfuse.serve.limits import Limits
from lmfuse.serve.server import ServerThread
from lmfuse.serve.testing import start_server

USER = [{"role": "user", "content": "hi"}]
SRC = str(Path(__file__).resolve().parents[2] / "src")


def test_several_api_keys_missing_and_wrong_keys(members):
    cfg = {"backends": {"a": {"kind": "openai", "base_url": members["a"], "model": "m"}},
           "models": {"a": {"method": "single", "backend": "a"}}}  # fmt: skip
    with start_server(cfg, api_key=["key-one", "key-two"]) as url:
        for key in ("key-one", "key-two"):
            c = openai.OpenAI(base_url=url, api_key=key, max_retries=0)
            assert c.chat.completions.create(model="a", messages=USER).choices[0].message.content
        with pytest.raises(openai.AuthenticationError) as err:
            openai.OpenAI(base_url=url, api_key="key-three", max_retries=0).models.list()
        assert "key-one" not in str(err.value.body) and "key-two" not in str(err.value.body)
        r = httpx.get(f"{url}/models")  # no Authorization header at all
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        assert httpx.get(url.removesuffix("/v1") + "/health").status_code == 200  # health needs no key


def test_a_full_queue_answers_429_with_retry_after_and_loses_nothing():
    slow = ScriptedBackend(lambda r: "done", delay=0.4)
    opts = ServerOptions(limits=Limits(max_concurrency=2, max_queue=1, retry_after=3))
    with ServerThread(create_app({"m": slow}, options=opts)) as s:

        async def go():
            async with httpx.AsyncClient(timeout=10) as c:
                body = {"model": "m", "messages": USER}
                return await asyncio.gather(
                    *(c.post(f"{s.base_url}/chat/completions", json=body) for _ in range(6))
                )

        replies = asyncio.run(go())
    codes = sorted(r.status_code for r in replies)
    assert codes == [200, 200, 200, 429, 429, 429]
    for r in replies:
        if r.status_code == 429:
            assert r.headers["retry-after"] == "3" and r.json()["error"]["type"] == "rate_limit_error"
        else:
            assert r.json()["choices"][0]["message"]["content"] == "done"


def test_injected_429_is_typed_as_a_rate_limit():
    with (
        ServerThread(
            create_app({"m": ScriptedBackend(lambda r: "x")}, Faults(fail_first=1, fail_status=429))
        ) as s,
        pytest.raises(openai.RateLimitError) as err,
    ):
        openai.OpenAI(base_url=s.base_url, api_key="x", max_retries=0).chat.completions.create(
            model="m", messages=USER
        )
    assert err.value.body["type"] == "rate_limit_error"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_process_prints_ready_and_drains_on_sigterm(tmp_path):
    cfg = tmp_path / "serve.yaml"
    cfg.write_text(
        "backends:\n  s: {kind: scripted, replies: {slow: 'finished after a while'}, delay: 1.5}\n"
        "models:\n  slow: {method: single, backend: s}\nserver: {grace_seconds: 10}\n"
    )
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": SRC, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "lmfuse", "serve", "--config", str(cfg), "--port", str(port)],
                            stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
    try:
        lines = []
        for line in proc.stderr:
            lines.append(line)
            if "ready at" in line:
                break
        assert f"ready at http://127.0.0.1:{port}/v1: slow" in lines[-1], lines
        assert not any("warning" in line for line in lines), lines  # loopback, no key: no warning
        url = f"http://127.0.0.1:{port}/v1"
        result = {}
        t = threading.Thread(target=lambda: result.update(r=httpx.post(
            f"{url}/chat/completions", json={"model": "slow", "messages": USER}, timeout=20)))  # fmt: skip
        t.start()
        time.sleep(0.5)  # the request is in flight
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        with pytest.raises(httpx.ConnectError):  # new connections are refused while draining
            httpx.get(f"{url}/models", timeout=2)
        t.join(20)
        assert result["r"].status_code == 200
        assert result["r"].json()["choices"][0]["message"]["content"] == "finished after a while"
        # after draining, uvicorn re-raises the SIGTERM it caught, so the exit is "terminated by SIGTERM"
        assert proc.wait(15) in (0, -signal.SIGTERM)
        assert "Traceback" not in proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()


def test_a_non_loopback_host_without_an_api_key_is_warned_about():
    # the check the serve command prints from, tried on host values without binding them
    from lmfuse.serve.command import host_warning

    for host in ["0.0.0.0", "::", "192.0.2.7", "10.0.0.5", "2001:db8::1", "lmfuse.example"]:
        warning = host_warning(host, [])
        assert warning is not None and f"serving on {host} without an API key" in warning
        assert "--api-key-env" in warning
        assert host_warning(host, ["a-key"]) is None  # a key is set: nothing to warn about
    for host in ["127.0.0.1", "127.0.0.2", "localhost", "::1"]:
        assert host_warning(host, []) is None


def test_serve_refuses_bad_arguments_before_loading(capsys):
    from lmfuse.cli import main

    for args, msg in [(["--port", "70000"], "--port: expected a TCP port 0-65535, found 70000"),
                      (["zoo:add", "zoo:sub", "--name", "a", "--name", "a"], "found a more than once"),
                      (["--api-key-env", "LMFUSE_TEST_UNSET_KEY"], "LMFUSE_TEST_UNSET_KEY is not set")]:  # fmt: skip
        assert main(["serve", *args]) == 2
        err = capsys.readouterr().err
        assert msg in err and "Traceback" not in err and "loading" not in err


def test_member_keys_never_reach_a_response_or_error(monkeypatch):
    """A member that rejects lmfuse's key: the fusion reports the member as failed, without the key."""
    monkeypatch.setenv("LMFUSE_TEST_MEMBER_KEY", "sk-member-secret-123")
    guarded = create_app({"m": ScriptedBackend(lambda r: "ok")}, api_key="the-right-key")
    with ServerThread(guarded) as member:
        backend = {"kind": "openai", "base_url": member.base_url, "model": "m", "api_key_env": "LMFUSE_TEST_MEMBER_KEY",
                   "max_retries": 0}  # fmt: skip
        cfg = {"backends": {"g": backend}, "models": {"v": {"method": "vote", "members": ["g"], "quorum": 1}}}
        with start_server(cfg) as url:
            r = httpx.post(f"{url}/chat/completions", json={"model": "v", "messages": USER})
    assert r.status_code == 502 and "HTTP 401" in r.text
    assert "sk-member-secret-123" not in r.text and "the-right-key" not in r.text


def test_oversize_bodies_get_413_with_or_without_content_length():
    """The body limit holds for a chunked upload (no Content-Length) too: the server answers 413 as
    soon as the limit is passed, without waiting for (or holding) the rest of the body."""
    opts = ServerOptions(max_body_bytes=2000)
    with ServerThread(create_app({"m": ScriptedBackend(lambda r: "ok")}, options=opts)) as s:
        url = f"{s.base_url}/chat/completions"
        small = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}'
        big = small[:-3] + b" " * 3000 + small[-3:]

        def chunked(data: bytes):
            yield from (data[i : i + 500] for i in range(0, len(data), 500))

        for content in (big, chunked(big)):  # Content-Length, then chunked (httpx sends no length)
            r = httpx.post(url, content=content, headers={"content-type": "application/json"})
            assert r.status_code == 413, r.text
            err = r.json()["error"]
            assert err["type"] == "invalid_request_error" and "at most 2000" in err["message"]
        r = httpx.post(url, content=chunked(small), headers={"content-type": "application/json"})
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "ok"
        # a raw chunked upload that passes the limit and then never ends: the 413 comes at once
        with socket.create_connection((s.host, s.port), timeout=5) as sock:
            head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: {s.host}\r\nContent-Type: application/json"
                    "\r\nTransfer-Encoding: chunked\r\n\r\n").encode()  # fmt: skip
            sock.sendall(head + b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunked(big)))
            reply = sock.recv(65536)
        assert reply.startswith(b"HTTP/1.1 413") and b"at most 2000" in reply
