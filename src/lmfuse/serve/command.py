"""``lmfuse serve``: parse, check everything, load the models, bind, serve; print "ready" when ready."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import socket

DESCRIPTION = """\
Serve every fusion as one OpenAI-compatible model: /v1/models, /v1/chat/completions, /v1/completions
(streaming, n, logprobs for single models) and /health. With no arguments, the embedded default serves
the zoo models and vote-zoo, moa-zoo, eot-zoo and ensemble-zoo over them, offline. --config serve.yaml
declares backends (local or any OpenAI-compatible server) and models (single, vote, moa, eot, ensemble);
model arguments serve those local models as they are. Binds 127.0.0.1 unless --host says otherwise."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("serve", help="OpenAI-compatible server: every fusion served as one model",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    s.add_argument("models", nargs="*", help="serve these local models as they are: zoo:NAME, a zoo name, "
                   "or a model directory (instead of --config)")  # fmt: skip
    s.add_argument("--config", help="serve.yaml: backends, models and server options (see examples/serve/)")
    s.add_argument("--name", action="append", help="model id for each positional model (default: its name)")
    s.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    s.add_argument("--api-key-env", action="append", metavar="NAME",
                   help="require the key held in environment variable NAME (repeat for several keys)")  # fmt: skip
    s.add_argument("--workers", type=int, default=1,
                   help="server processes on the same port (default 1; on Linux each its own SO_REUSEPORT "
                   "socket, for an even share of connections); limits are per worker, and each worker "
                   "loads its own copy of local models")  # fmt: skip
    s.add_argument("--max-logprobs", type=int, help="largest logprobs K a request may ask (default 20)")
    s.add_argument("--latency", type=float, default=0.0, help="testing: seconds added to every request")
    s.add_argument("--fail-first", type=int, default=0, help="testing: fail the first N requests")
    s.add_argument("--fail-status", type=int, default=500, help="testing: HTTP status of those (default 500)")
    s.add_argument("--hang-first", type=int, default=0, help="testing: then hang the next N requests")
    s.add_argument("--hang-seconds", type=float, default=30.0, help="testing: for this long (default 30)")
    s.add_argument("--down", action="store_true", help="testing: answer every request with 503")
    s.set_defaults(func=_serve)


def _config_data(args: argparse.Namespace) -> tuple[dict, str | None]:
    """The serve.yaml data: from --config, from positional models, or the embedded default."""
    from pathlib import Path

    from lmfuse.core.config import load_yaml
    from lmfuse.errors import ConfigError
    from lmfuse.serve.config import default_config

    problems = []
    if not 0 <= args.port <= 65535:
        problems.append(f"--port: expected a TCP port 0-65535, found {args.port}")
    if args.workers < 1:
        problems.append(f"--workers: expected a number of processes >= 1, found {args.workers}")
    names = args.name or []
    if names and not args.models:
        problems.append("--name: only with positional models (in a config, the model ids are its keys)")
    elif names and len(names) != len(args.models):
        problems.append(f"--name: expected one per model ({len(args.models)}), found {len(names)}")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        problems.append(f"--name: each model id must be unique, found {', '.join(dupes)} more than once")
    if args.config and args.models:
        problems.append("give either --config or model arguments, not both")
    if problems:
        raise ConfigError(problems)
    if args.config:
        return load_yaml(args.config), args.config
    if not args.models:
        return default_config(), None
    backends, models = {}, {}
    for i, spec in enumerate(args.models):
        path = spec if (":" in spec or "/" in spec or Path(spec).exists()) else f"zoo:{spec}"
        model_id = names[i] if names else Path(path.split(":", 1)[-1]).name
        if model_id in models:
            raise ConfigError(f"model id {model_id!r} given twice; name them apart with --name")
        backends[model_id] = {"kind": "hf", "model": path}
        models[model_id] = {"method": "single", "backend": model_id}
        if path.startswith("zoo:"):
            from lmfuse.serve.config import ZOO_MAX_MODEL_LEN

            models[model_id]["max_model_len"] = ZOO_MAX_MODEL_LEN
    return {"backends": backends, "models": models}, None


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address (127.0.0.0/8, ``::1``); any other name or address is not."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def host_warning(host: str, keys: list[str]) -> str | None:
    """The warning printed when ``host`` is reachable from other machines and no API key is set."""
    if keys or is_loopback(host):
        return None
    return (f"warning: serving on {host} without an API key: anyone who can reach it can use it "
            "(set --api-key-env)")  # fmt: skip


def _keys(args: argparse.Namespace) -> list[str]:
    import os

    from lmfuse.errors import ConfigError

    missing = [n for n in args.api_key_env or [] if not os.environ.get(n)]
    if missing:
        raise ConfigError([f"--api-key-env: environment variable {n} is not set" for n in missing])
    return [os.environ[n] for n in args.api_key_env or []]


def _serve(args: argparse.Namespace) -> int:
    from lmfuse.errors import ConfigError
    from lmfuse.serve.app import create_app
    from lmfuse.serve.build import build_models, server_options
    from lmfuse.serve.config import parse
    from lmfuse.serve.faults import Faults
    from lmfuse.serve.server import bind, serve_forever

    data, source = _config_data(args)
    if args.max_logprobs is not None and isinstance(data, dict):
        data.setdefault("server", {})["max_logprobs"] = args.max_logprobs
    config = parse(data, source)
    faults = Faults(
        args.latency, args.fail_first, args.fail_status, args.hang_first, args.hang_seconds, args.down
    )
    if problems := faults.validate():
        raise ConfigError(problems)
    keys = _keys(args)
    sock = bind(args.host, args.port)  # a port in use fails here, before any model is loaded
    local = sorted(n for n, b in config.backends.items() if b.kind == "hf")
    ensemble = any(m.get("method") == "ensemble" for m in config.models.values())
    if args.workers > 1:
        return _serve_workers(args, data, source, config, faults, sock, keys, local, ensemble)
    if local or ensemble:
        from lmfuse.core.loading import quiet_transformers  # (imports torch: only where models load)

        quiet_transformers()
    print(f"lmfuse serve: loading {len(config.models)} models ...", file=sys.stderr)
    models = build_models(config)
    if warning := host_warning(args.host, keys):
        print(warning, file=sys.stderr)
    url = f"http://{args.host}:{sock.getsockname()[1]}/v1"
    app = create_app(models, faults, api_key=keys, options=server_options(config))

    def ready() -> None:
        print(f"lmfuse serve: ready at {url}: {', '.join(models)}", file=sys.stderr, flush=True)

    serve_forever(app, sock, grace=config.server.grace_seconds, on_ready=ready)
    return 0


def _serve_workers(args: argparse.Namespace, data: dict, source: str | None, config: Any, faults: Any,
                   sock: socket.socket, keys: list[str], local: list[str], ensemble: bool) -> int:  # fmt: skip
    """``--workers N``: the checked config goes to N worker processes (``workers.py``), keys do not
    (``local``: the config's ``hf`` backends; ``ensemble``: it serves a token-level ensemble)."""
    from lmfuse.serve.server import reuse_port_group
    from lmfuse.serve.workers import WorkerSpec, serve_workers

    if local or ensemble:
        print(f"warning: --workers {args.workers} with local models ({', '.join(local) or 'ensemble members'}): "
              f"each worker loads its own copy ({args.workers}x the memory and load time)", file=sys.stderr)  # fmt: skip
    print(
        f"lmfuse serve: starting {args.workers} workers, {len(config.models)} models each ...",
        file=sys.stderr,
    )
    if warning := host_warning(args.host, keys):
        print(warning, file=sys.stderr)
    url = f"http://{args.host}:{sock.getsockname()[1]}/v1"
    sockets = reuse_port_group(sock, args.workers)  # one per worker where the kernel balances them
    spec = WorkerSpec(
        data, source, faults, tuple(args.api_key_env or ()), quiet_transformers=bool(local or ensemble)
    )

    def ready() -> None:
        print(f"lmfuse serve: ready at {url}: {', '.join(config.models)}", file=sys.stderr, flush=True)

    def report(line: str) -> None:
        print(f"lmfuse serve: {line}", file=sys.stderr, flush=True)

    return serve_workers(spec, sockets, args.workers, config.server.grace_seconds, ready, report)
