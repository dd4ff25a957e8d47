"""An OpenAI-compatible server over local models (``lmfuse serve``), with injectable latency and faults."""

from __future__ import annotations

from lmfuse.serve.faults import Faults

__all__ = ["Faults"]
