"""Mixture-of-experts: GShard / Switch / Mixtral / DeepSeekMoE layers with fast dispatch, expert
parallelism, and native MoE checkpoints built from dense models.

Imports are lazy so that ``import lmfuse.moe`` costs nothing until a name is used.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "MoE": "lmfuse.moe.layer",
    "MoEStats": "lmfuse.moe.layer",
    "MoEConfig": "lmfuse.moe.config",
    "preset": "lmfuse.moe.config",
    "PRESETS": "lmfuse.moe.config",
    "route": "lmfuse.moe.router",
    "Routing": "lmfuse.moe.router",
    "RouterDraws": "lmfuse.moe.router",
    "make_draws": "lmfuse.moe.router",
    "PromptRoutedMoE": "lmfuse.moe.prompt",
    "PromptRouting": "lmfuse.moe.prompt",
    "MoETrainConfig": "lmfuse.moe.train",
    "moe_train": "lmfuse.moe.train",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'lmfuse.moe' has no attribute {name!r}")
