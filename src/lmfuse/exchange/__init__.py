"""Text-level fusion: Exchange-of-Thought (``EoT``) and Mixture-of-Agents (``MoA``) over any backends."""

from __future__ import annotations

from lmfuse.exchange.config import AgentConfig, EoTConfig, MoAConfig
from lmfuse.exchange.result import ExchangeResult
from lmfuse.exchange.transcript import Turn

__all__ = ["AgentConfig", "EoTConfig", "ExchangeResult", "MoAConfig", "Turn"]
