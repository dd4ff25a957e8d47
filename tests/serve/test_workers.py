"""``lmfuse serve --workers 2`` as a real process on 127.0.0.1: both workers answer (the official
openai client), a dead worker is reported and replaced, SIGTERM drains in-flight requests in every
worker and refuses new connections, a bad config exits 2 before the port is opened, no key is printed."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from openai import AuthenticationError, OpenAI

SRC = str(Path(__file__).resolve().parents[2] / "src")
KEY, MEMBER_KEY = "sk-served-7f3a9c", "sk-member-51be20"
USER = [{"role": "user", "content": "hello?"}]
CONFIG = """\
backends:
  q: {kind: scripted, replies: {q: 'hello from a worker'}}
  s: {kind: scripted, replies: {slow: 'finished after a while'}, delay: 1.5}
  remote: {kind: openai, base_url: 'http://127.0.0.1:9/v1', model: m, api_key_env: LMFUSE_W_MEMBER_KEY}
models:
  q: {method: single, backend: q}
  slow: {method: single, backend: s}
  remote: {method: single, backend: remote}
server: {grace_seconds: 10}
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve(cfg: Path, port: int, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": SRC, "HF_HUB_OFFLINE": "1", "LMFUSE_W_KEY": KEY,
           "LMFUSE_W_MEMBER_KEY": MEMBER_KEY}  # fmt: skip
    cmd = [sys.executable, "-m", "lmfuse", "serve", "--config", str(cfg), "--port", str(port), *extra]
    return subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)


def _until(proc: subprocess.Popen, text: str, lines: list[str]) -> str:
    for line in proc.stderr:  # type: ignore[union-attr]
        lines.append(line)
        if text in line:
            return line
    raise AssertionError(f"no {text!r} line; exit {proc.wait()}: {lines}")


def _children(pid: int) -> set[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return {int(p) for p in f.read().split()}


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live process (not gone, not a zombie waiting for its reaper)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _worker_and_answer(url: str) -> tuple[int, str]:
    """On one keep-alive connection: which worker it reached (``/health``), its ``/v1/models``, and a
    chat answer from it."""
    with httpx.Client(limits=httpx.Limits(max_connections=1), timeout=10) as http:
        worker = http.get(url.removesuffix("/v1") + "/health").json()["worker"]
        client = OpenAI(base_url=url, api_key=KEY, http_client=http, max_retries=0)
        assert [m.id for m in client.models.list().data] == ["q", "slow", "remote"]
        reply = client.chat.completions.create(model="q", messages=USER)
        return worker, reply.choices[0].message.content


def _listening_sockets(port: int) -> int:
    """How many sockets listen on 127.0.0.1:``port`` (``/proc/net/tcp``, state 0A)."""
    local = f"0100007F:{port:04X}"
    rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return sum(r.split()[1] == local and r.split()[3] == "0A" for r in rows)


def _workers_of_connections(port: int, n: int) -> list[int]:
    """Open ``n`` connections at once (as a client pool does), then ask each which worker holds it."""
    conns = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(n)]
    try:
        out = []
        for c in conns:
            c.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while b"}" not in data:
                data += c.recv(4096)
            out.append(int(data.split(b'"worker":', 1)[1].split(b"}", 1)[0].split(b",", 1)[0]))
        return out
    finally:
        for c in conns:
            c.close()


def test_two_workers_answer_restart_and_drain_on_sigterm(tmp_path):
    cfg = tmp_path / "serve.yaml"
    cfg.write_text(CONFIG)
    port = _free_port()
    url = f"http://127.0.0.1:{port}/v1"
    proc = _serve(cfg, port, "--workers", "2", "--api-key-env", "LMFUSE_W_KEY")
    lines: list[str] = []
    try:
        assert f"ready at {url}: q, slow, remote" in _until(proc, "ready at", lines)
        pids = next(line for line in lines if "2 workers (pids" in line)
        workers = {int(p) for p in pids.split("pids ", 1)[1].rstrip(")\n").split(", ")}
        assert len(workers) == 2 and workers <= _children(proc.pid), (workers, lines)
        seen: dict[int, str] = {}
        deadline = time.monotonic() + 10
        while set(seen) != workers and time.monotonic() < deadline:  # new connections, either worker
            worker, text = _worker_and_answer(url)
            seen[worker] = text
        assert set(seen) == workers, (seen, workers)  # both workers served chat completions
        assert set(seen.values()) == {"hello from a worker"}
        # each worker has its own SO_REUSEPORT socket: 64 connections opened at once are spread evenly
        # (Bin(64, 1/2) below 16 has probability 3e-5); on one shared socket, the first worker to wake
        # took most of such a burst (87% and 96% of the work in benchmarks/README.md)
        assert _listening_sockets(port) == 2
        held = _workers_of_connections(port, 64)
        assert set(held) == workers and min(held.count(w) for w in workers) >= 16, held
        with pytest.raises(AuthenticationError):  # the key is checked in the workers too
            OpenAI(base_url=url, api_key="wrong", max_retries=0).models.list()

        victim = sorted(workers)[0]
        os.kill(victim, signal.SIGKILL)
        line = _until(proc, "died", lines)
        assert f"worker {victim} died (exit -9); restarted as" in line
        replacement = int(line.rsplit(" ", 1)[1])
        assert {replacement, *workers} - {victim} <= _children(proc.pid)
        assert victim not in _children(proc.pid)
        deadline = time.monotonic() + 15
        while httpx.get(url.removesuffix("/v1") + "/health", timeout=5).json()["worker"] != replacement:
            assert time.monotonic() < deadline, "the replacement worker never answered"

        # SIGHUP: each worker is replaced by a new one on its own socket, once the new one serves
        proc.send_signal(signal.SIGHUP)
        hup = [_until(proc, "(SIGHUP)", lines), _until(proc, "(SIGHUP)", lines)]
        fresh = {int(line.split(" replaced by ", 1)[1].split()[0]) for line in hup}
        assert len(fresh) == 2 and fresh <= _children(proc.pid) and _listening_sockets(port) == 2
        held = _workers_of_connections(port, 64)
        assert set(held) == fresh and min(held.count(w) for w in fresh) >= 16, held
        workers |= fresh

        results: list = []
        threads = [threading.Thread(target=lambda: results.append(httpx.post(  # one per connection
            f"{url}/chat/completions", json={"model": "slow", "messages": [{"role": "user", "content": "slow"}]},
            headers={"authorization": f"Bearer {KEY}"}, timeout=20))) for _ in range(4)]  # fmt: skip
        for t in threads:
            t.start()
        time.sleep(0.6)  # the requests are in flight (1.5 s each)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        with pytest.raises(httpx.ConnectError):  # new connections are refused while draining
            httpx.get(f"{url}/models", timeout=2)
        for t in threads:
            t.join(20)
        assert [r.status_code for r in results] == [200] * 4
        assert {r.json()["choices"][0]["message"]["content"] for r in results} == {"finished after a while"}
        assert proc.wait(15) == 0
        for pid in workers | {replacement}:
            assert not _running(pid)  # every worker ended
    finally:
        proc.kill()
        proc.wait()
    out = "".join(lines) + proc.stderr.read()
    assert "Traceback" not in out, out
    assert KEY not in out and MEMBER_KEY not in out


def test_a_bad_config_with_workers_exits_2_before_binding(tmp_path):
    cfg = tmp_path / "serve.yaml"
    cfg.write_text("backends:\n  q: {kind: scripted}\nmodels:\n  q: {method: vote, members: [q, nope]}\n")
    port = _free_port()
    proc = _serve(cfg, port, "--workers", "2")
    with socket.socket() as probe:  # the port stays free all along: nothing binds it
        probe.bind(("127.0.0.1", port))
        assert proc.wait(20) == 2
    err = proc.stderr.read()
    assert "nope" in err and "Traceback" not in err
    assert "cannot listen" not in err and "starting" not in err  # checked before binding; no worker
    bad = _serve(cfg, port, "--workers", "0")
    assert bad.wait(20) == 2
    err = bad.stderr.read()
    assert "--workers: expected a number of processes >= 1, found 0" in err


def test_workers_stop_when_the_parent_is_killed(tmp_path):
    cfg = tmp_path / "serve.yaml"
    cfg.write_text(CONFIG)
    proc = _serve(cfg, _free_port(), "--workers", "2")
    lines: list[str] = []
    try:
        _until(proc, "ready at", lines)
        pids = next(line for line in lines if "2 workers (pids" in line)
        workers = [int(p) for p in pids.split("pids ", 1)[1].rstrip(")\n").split(", ")]
        proc.kill()  # SIGKILL: the supervisor cannot stop them; each worker notices and drains itself
        proc.wait()
        deadline = time.monotonic() + 10
        while any(_running(p) for p in workers):
            assert time.monotonic() < deadline, "orphaned workers kept running"
            time.sleep(0.1)
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.slow  # ~10-15 s: each worker imports transformers before it finds the model missing
def test_a_model_that_fails_to_load_in_the_workers_exits_2(tmp_path):
    model = tmp_path / "not-a-model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "llama"}')  # passes the config check, fails to load
    cfg = tmp_path / "serve.yaml"
    cfg.write_text(
        f"backends:\n  b: {{kind: hf, model: '{model}'}}\nmodels:\n  b: {{method: single, backend: b}}\n"
    )
    proc = _serve(cfg, _free_port(), "--workers", "2")
    assert proc.wait(60) == 2
    err = proc.stderr.read()
    assert f"model not found at '{model}'" in err and "failed to start" in err, err
    assert "ready at" not in err and "restarted" not in err  # no restart loop


def test_reuse_port_group_shares_one_port_and_never_joins_another_servers_group():
    from lmfuse.errors import ConfigError
    from lmfuse.serve.server import bind, reuse_port_group

    probe = bind("127.0.0.1", 0)
    port = probe.getsockname()[1]
    group = reuse_port_group(probe, 3)
    try:
        assert probe.fileno() == -1  # the probe is closed; three sockets of their own hold the port
        assert len({s.fileno() for s in group}) == 3 and {s.getsockname()[1] for s in group} == {port}
        for s in group:
            s.listen()
        assert _listening_sockets(port) == 3
        # another lmfuse serve on this port binds its probe without SO_REUSEPORT: refused, it cannot
        # quietly take a share of this server's connections
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}"):
            bind("127.0.0.1", port)
    finally:
        for s in group:
            s.close()
    one = bind("127.0.0.1", 0)
    assert reuse_port_group(one, 1) == [one]  # one worker: the socket as it is
    one.close()
