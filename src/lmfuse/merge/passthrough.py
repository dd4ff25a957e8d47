"""``passthrough``: mergekit's layer stacking, which is exactly a graft — done by ``lmfuse.graft``.

Each one-source slice ``{model, layer_range: [a, b)}`` becomes a graft slice ``{model, layers: [a, b]}``;
embeddings come from the first slice's model and the final norm and ``lm_head`` from the last's,
as in mergekit. ``dtype``/``out_dtype`` become the graft's output dtype.
"""

from __future__ import annotations

from lmfuse.errors import ConfigError
from lmfuse.graft.recipe import GraftRecipe, Slice
from lmfuse.merge.recipe import MergeRecipe


def to_graft_recipe(recipe: MergeRecipe) -> GraftRecipe:
    """The graft recipe equivalent to a passthrough merge (``ConfigError`` if it has none)."""
    problems = recipe.validate()
    if problems:
        raise ConfigError(problems, source="merge recipe")
    slices = [Slice(sl.sources[0].model, list(sl.sources[0].layer_range)) for sl in recipe.slices or []]
    return GraftRecipe(slices=slices, dtype=recipe.out_dtype or recipe.dtype)
