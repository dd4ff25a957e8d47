"""``start_server(config)``: lmfuse serve on a free port of 127.0.0.1 in a background thread, for tests
and for other lmfuse parts that need a real OpenAI-compatible server (e.g. remote ensemble members)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from lmfuse.serve.server import ServerThread


@contextlib.contextmanager
def start_server(
    config: dict[str, Any] | None = None, api_key: str | list[str] | None = None
) -> Iterator[str]:
    """``with start_server(cfg) as base_url:`` — ``base_url`` is ``http://127.0.0.1:PORT/v1``.

    ``config`` is a serve.yaml as a dict (``None``: the embedded default, the zoo models); a ``server:``
    section sets ``max_logprobs`` and the other server options."""
    from lmfuse.serve.app import create_app
    from lmfuse.serve.build import build_models, server_options
    from lmfuse.serve.config import default_config, parse

    cfg = parse(default_config() if config is None else config)
    models = build_models(cfg)
    app = create_app(models, api_key=api_key, options=server_options(cfg))
    try:
        with ServerThread(app) as server:
            yield server.base_url
    finally:
        for m in models.values():
            with contextlib.suppress(Exception):
                _close(m)


def _close(fusion: Any) -> None:
    import asyncio

    asyncio.run(fusion.aclose())
