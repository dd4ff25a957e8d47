"""Merges in memory: the merged tensors copied into a transformers model, nothing written to disk.

For small models (the zoo, search candidates). ``merged_model`` builds a fresh float32 model from the
plan's config; ``load_merge`` refills an existing one, so a search reuses one allocation.
"""

from __future__ import annotations

from typing import Any

import torch

from lmfuse.merge.plan import MergePlan, plan_merge
from lmfuse.merge.recipe import MergeRecipe
from lmfuse.merge.write import check_device, compute


def empty_model(config: dict[str, Any], device: str | torch.device | None = None) -> torch.nn.Module:
    """A float32 causal LM of ``config`` (randomly initialised; ``load_merge`` overwrites every tensor)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    data = {k: v for k, v in config.items() if k not in ("model_type", "dtype", "torch_dtype")}
    cfg = AutoConfig.for_model(config["model_type"], **data)
    return AutoModelForCausalLM.from_config(cfg).to(check_device(device)).eval()


def load_merge(model: torch.nn.Module, plan: MergePlan, device: str | torch.device | None = None) -> None:
    """Copy every merged tensor of ``plan`` into ``model`` (cast to the model's dtype), one at a time."""
    dev = check_device(device)
    params = dict(model.named_parameters()) | dict(model.named_buffers())
    missing = [j.name for j in plan.jobs if j.name not in params]
    if missing:
        raise ValueError(
            f"the model has no tensors named {missing[:3]}; was it built from the plan's config?"
        )
    with torch.no_grad():
        for job in plan.jobs:
            params[job.name].copy_(compute(plan, job, dev))


def merged_model(
    recipe: MergeRecipe, device: str | torch.device | None = None, opened: dict | None = None
) -> torch.nn.Module:
    """Plan (all checks) and merge ``recipe`` into a new float32 model in memory."""
    plan = plan_merge(recipe, opened=opened)
    model = empty_model(plan.config, device)
    load_merge(model, plan, device)
    return model
