"""``lmfuse serve``: every fusion served as one OpenAI-compatible model (see ``config.py`` for serve.yaml,
``app.create_app`` for the app, ``testing.start_server`` for a real server on 127.0.0.1), with
injectable latency and faults for tests."""

from __future__ import annotations

from lmfuse.serve.faults import Faults

__all__ = ["Faults"]
