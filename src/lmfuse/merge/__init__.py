"""Weight-space merging of fine-tunes of one base (model soups, SLERP, task arithmetic, TIES, DARE,
DELLA, Model Stock, Karcher), reading mergekit's YAML recipes as they are.

``merge(recipe, out)`` checks everything, then streams the merged checkpoint to ``out`` one tensor at a
time; ``plan_merge(recipe)`` only checks and plans; ``load_merge_recipe(path)`` reads a YAML file;
``search`` tunes a recipe's weights and densities with CMA-ES. Heavy imports happen inside the functions.
"""

from __future__ import annotations

from lmfuse.merge.recipe import MergeRecipe, ModelSpec, load_merge_recipe, recipe_from_dict

__all__ = [
    "MergeRecipe",
    "ModelSpec",
    "load_merge_recipe",
    "merge",
    "plan_merge",
    "recipe_from_dict",
    "search",
]


def __getattr__(name: str):
    if name == "merge":
        from lmfuse.merge.write import merge

        return merge
    if name == "plan_merge":
        from lmfuse.merge.plan import plan_merge

        return plan_merge
    if name == "search":
        from lmfuse.merge.search import search

        return search
    raise AttributeError(name)
