"""``lmfuse serve --workers N``: N server processes on one port, supervised by uvicorn's own
multi-process supervisor (``uvicorn.supervisors.Multiprocess``: spawned workers, a health-check ping,
a dead worker restarted). On Linux each worker accepts on a listening socket of its own, all bound with
``SO_REUSEPORT`` (``server.reuse_port_group``), so that the kernel spreads connections evenly; the
parent keeps every socket open, so connections that reach a dead worker's socket wait in its queue for
the replacement, which gets the same socket, instead of being refused. Elsewhere they share one socket.

The parent has already checked the config and bound the socket; each worker rebuilds the same app from
the same checked config data, which reaches it inside the pickled uvicorn ``Config`` over the
multiprocessing pipe (nothing on disk, nothing new in the environment). API keys are never in that
data: the workers read them from the environment variables the config and ``--api-key-env`` name, as
the parent did. A worker whose parent is gone (killed with SIGKILL) shuts itself down."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from uvicorn.supervisors.multiprocess import Multiprocess, Process

from lmfuse.serve.faults import Faults
from lmfuse.serve.server import uvicorn_config

STARTUP_FAILURE = 3
"""Exit status of a worker that cannot build its app (uvicorn's: the supervisor then stops, no restart)."""


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs to build the app: the checked config data, never a secret."""

    data: dict
    source: str | None
    faults: Faults
    api_key_env: tuple[str, ...]
    quiet_transformers: bool = False
    """Local models are loaded: silence transformers' progress bars and warnings, as one process does."""


def build_app(spec: WorkerSpec) -> Any:
    """The app of ``spec``, as the single-process server builds it (parse, build the models)."""
    from lmfuse.serve.app import create_app
    from lmfuse.serve.build import build_models, server_options
    from lmfuse.serve.config import parse

    config = parse(spec.data, spec.source)
    keys = [os.environ[n] for n in spec.api_key_env]
    return create_app(build_models(config), spec.faults, api_key=keys, options=server_options(config))


def _worker_app(spec: WorkerSpec) -> Any:
    """uvicorn's app factory in a worker: a failure exits with ``STARTUP_FAILURE`` (no restart loop)."""
    import gc

    from lmfuse.serve.server import GC_THRESHOLD

    gc.set_threshold(*GC_THRESHOLD)
    if spec.quiet_transformers:
        from lmfuse.core.loading import quiet_transformers

        quiet_transformers()
    try:
        app = build_app(spec)
    except Exception as exc:  # shown once by the parent's "failed to start" line and here
        print(f"lmfuse serve: worker {os.getpid()}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        sys.exit(STARTUP_FAILURE)
    threading.Thread(target=_orphan_watch, args=(os.getppid(),), daemon=True).start()
    return app


def _orphan_watch(parent: int) -> None:
    """SIGTERM this worker (a graceful stop) once its parent is gone."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)


def serve_workers(spec: WorkerSpec, sockets: list[socket.socket], workers: int, grace: float,
                  on_ready: Callable[[], None], report: Callable[[str], None]) -> int:  # fmt: skip
    """Serve ``spec`` with ``workers`` processes until SIGTERM/SIGINT (each worker lets its in-flight
    requests finish within ``grace`` seconds); 0, or 2 when a worker could not build the app (as the
    single-process server exits on a model that fails to load). ``sockets``: one shared by all, or one
    per worker. ``report`` gets a line with the worker pids, and one per worker that died or failed."""
    if len(sockets) not in (1, workers):
        raise ValueError(f"expected 1 socket or {workers} (one per worker), found {len(sockets)}")
    config = uvicorn_config(functools.partial(_worker_app, spec), grace, workers=workers)
    supervisor = _Supervisor(config, sockets, on_ready, report)
    supervisor.run()
    return 2 if supervisor.failed else 0


class _Supervisor(Multiprocess):
    """uvicorn's ``Multiprocess``, plus: worker ``i`` gets listening socket ``i`` when there is one per
    worker (also its replacement); "ready" once every worker serves; a line for each worker that died
    (it is restarted) or failed to start (the server stops); and on SIGTERM/SIGINT, at once (not at the
    supervisor's next 0.5 s tick), the parent's copies of the listening sockets are closed and every
    worker is told to drain, so that new connections are refused while in-flight requests finish."""

    def __init__(self, config: Any, sockets: list[socket.socket], on_ready: Callable[[], None],
                 report: Callable[[str], None]) -> None:  # fmt: skip
        super().__init__(config, sockets)
        self.on_ready, self.report, self.failed, self.stopping = on_ready, report, False, False
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stop)

    def _process(self, i: int) -> Process:
        """Worker ``i``'s process (not started), with its socket or the shared one."""
        own = self.sockets if len(self.sockets) == 1 else [self.sockets[i]]
        return Process(self.config, own)

    def _stop(self, sig: int, frame: object) -> None:
        self.signal_queue.append(sig)  # the supervisor's own handling (exit) follows at its next tick
        if self.stopping:
            return
        self.stopping = True
        for s in self.sockets:
            s.close()
        for p in self.processes:
            with contextlib.suppress(ProcessLookupError, TypeError):
                os.kill(p.pid, signal.SIGTERM)

    def init_processes(self) -> None:
        for i in range(self.processes_num):
            if self.stopping:
                return
            process = self._process(i)
            process.start()
            self.processes.append(process)
        for p in self.processes:
            while not self.stopping and p.process.is_alive() and not p.is_ready(timeout=1):
                time.sleep(0.05)
        if not self.stopping and all(p.process.is_alive() for p in self.processes):
            pids = ", ".join(str(p.pid) for p in self.processes)
            self.report(f"{len(self.processes)} workers (pids {pids})")
            self.on_ready()

    def keep_subprocess_alive(self) -> None:
        """uvicorn's check of each worker (a hung one is killed), with worker ``i`` replaced on its own
        socket; a worker that failed before serving stops the server instead (as uvicorn does)."""
        if self.stopping or self.should_exit.is_set():
            return
        for i, old in enumerate(self.processes):
            if old.is_alive(timeout=self.config.timeout_worker_healthcheck):
                continue
            old.kill()
            old.join()
            if old.exitcode == STARTUP_FAILURE:
                self.failed = True
                self.report(f"worker {old.pid} failed to start (exit {old.exitcode}); stopping")
                self.should_exit.set()
                return
            if self.stopping or self.should_exit.is_set():
                return
            new = self._process(i)
            new.start()
            self.processes[i] = new
            self.report(f"worker {old.pid} died (exit {old.exitcode}); restarted as {new.pid}")

    def restart_all(self) -> None:
        """SIGHUP: each worker replaced by a new one on its socket, once the new one serves."""
        for i, old in enumerate(self.processes):
            if self.stopping or self.should_exit.is_set():
                return
            new = self._process(i)
            new.start()
            if not new.wait_until_ready(self.config.timeout_worker_healthcheck, self.should_exit):
                new.kill()
                new.join()
                self.report(f"worker {new.pid} was not ready in time; keeping {old.pid}")
                return
            old.terminate()
            old.join()
            self.processes[i] = new
            self.report(f"worker {old.pid} replaced by {new.pid} (SIGHUP)")
