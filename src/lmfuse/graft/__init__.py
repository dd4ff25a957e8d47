"""Layer grafting and depth up-scaling (SOLAR): new checkpoints from layer slices, then training.

``graft(recipe, out)`` writes a checkpoint (validated first, streamed, atomic); ``plan_graft(recipe)``
only checks and plans; ``graft_model(models, recipe)`` grafts loaded models in memory; ``train`` runs
continued pre-training. Heavy imports happen inside the functions.
"""

from __future__ import annotations

from lmfuse.graft.recipe import GraftRecipe, Slice, dus_recipe, load_recipe, splice_recipe

__all__ = [
    "GraftRecipe", "Slice", "dus_recipe", "graft", "graft_model", "load_recipe", "plan_graft",
    "splice_recipe", "train",
]  # fmt: skip


def __getattr__(name: str):
    if name == "graft":
        from lmfuse.graft.write import graft

        return graft
    if name == "plan_graft":
        from lmfuse.graft.plan import plan_graft

        return plan_graft
    if name == "graft_model":
        from lmfuse.graft.inmemory import graft_model

        return graft_model
    if name == "train":
        from lmfuse.graft.train import train

        return train
    raise AttributeError(name)
