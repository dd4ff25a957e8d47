"""Run the app with uvicorn: in the foreground (``lmfuse serve``) or in a background thread (tests,
benchmarks) on a free port of 127.0.0.1. SIGTERM / SIGINT (foreground): stop accepting connections,
let in-flight requests finish within ``grace`` seconds, then exit."""

from __future__ import annotations

import gc
import socket
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from lmfuse.errors import ConfigError

DEFAULT_HOST = "127.0.0.1"
GC_THRESHOLD = (20_000, 50, 100)
"""``gc.set_threshold`` of a foreground server process (Python's default: 700, 10, 10)."""


def bind(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    """A listening-ready socket on ``host:port``; a port in use or a bad address is a ``ConfigError``.
    ``reuse_port``: ``SO_REUSEPORT``, so that other such sockets of this user can share the port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY on accepted connections only for such sockets; without
    # it, Nagle + delayed ACKs add ~40 ms to every response that is written in two parts (head, body)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; pick another --port "
                          "or --host") from None  # fmt: skip
    return sock


def reuse_port_group(sock: socket.socket, n: int) -> list[socket.socket]:
    """``n`` listening sockets on the address of ``sock`` (bound without ``SO_REUSEPORT``, which proved
    that nobody else holds the port), one per worker, for Linux to spread new connections across
    evenly (by a hash of each connection's addresses); ``sock`` is closed. With one socket shared by
    all workers, whichever worker wakes first accepts a burst of connections and keeps them as long as
    they are kept alive (87% and 96% of the work in benchmarks/README.md). Where ``SO_REUSEPORT``
    does not balance (not Linux), or ``n`` is 1: ``[sock]``, shared."""
    if n < 2 or not sys.platform.startswith("linux") or not hasattr(socket, "SO_REUSEPORT"):
        return [sock]
    host, port = sock.getsockname()[:2]
    sock.close()
    group: list[socket.socket] = []
    try:
        for _ in range(n):
            group.append(bind(host, port, reuse_port=True))
    except ConfigError:
        for s in group:
            s.close()
        raise
    return group


def uvicorn_config(app: Any, grace: float, log_level: str = "warning", workers: int = 1) -> Any:
    """The uvicorn ``Config`` of every lmfuse server; ``workers`` > 1: ``app`` is an app factory."""
    import uvicorn

    loop = "uvloop" if _has("uvloop") else "asyncio"
    http = "httptools" if _has("httptools") else "h11"
    # proxy_headers off: nothing here reads the client address, so X-Forwarded-* need no parsing
    return uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="off", loop=loop, http=http,
                          timeout_graceful_shutdown=grace, proxy_headers=False, workers=workers,
                          factory=workers > 1)  # fmt: skip


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


class ServerThread:
    """``with ServerThread(app) as s: ... s.base_url`` — uvicorn on its own thread and event loop."""

    def __init__(self, app: Any, host: str = DEFAULT_HOST, port: int = 0, grace: float = 5.0) -> None:
        import uvicorn

        self.sock = bind(host, port)
        self.host, self.port = host, self.sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn_config(app, grace))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``: what OpenAI clients take as ``base_url``."""
        return f"http://{self.host}:{self.port}/v1"

    def start(self, timeout: float = 20.0) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"server on {self.host}:{self.port} did not start within {timeout} s")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_forever(
    app: Any, sock: socket.socket, grace: float = 10.0, on_ready: Callable[[], None] | None = None
) -> None:
    """Serve on ``sock`` in the foreground until SIGTERM/SIGINT; ``on_ready()`` once it accepts requests.

    The process is the server's own (``lmfuse serve``): its cyclic garbage collector runs less often
    (``GC_THRESHOLD``), since each request allocates thousands of short-lived objects that die with
    it, and at Python's default every ~700 allocations rescanned the requests in flight (~7% of the CPU
    per fused request in a py-spy profile, ``benchmarks/README.md``)."""
    import uvicorn

    gc.set_threshold(*GC_THRESHOLD)
    server = uvicorn.Server(uvicorn_config(app, grace, log_level="warning"))
    if on_ready is not None:

        def watch() -> None:
            while not server.started and not server.should_exit:
                time.sleep(0.02)
            if server.started:
                on_ready()

        threading.Thread(target=watch, daemon=True).start()
    server.run(sockets=[sock])
