"""The graft recipe: which layers of which models, in order, become the new model.

```yaml
slices:                    # output layers, in order; ranges are half-open [start, end)
  - {model: path/or/id/A, layers: [0, 24]}
  - {model: path/or/id/B, layers: [8, 32]}
embeddings: A              # default: the first slice's model
head: B                    # final norm + lm_head; default: the last slice's model
dtype: bfloat16            # default: keep each tensor's dtype (a pure byte copy)
```

Checks that need only the recipe live here (``validate``); checks that need the models (bounds,
shapes, vocabularies) live in ``plan.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from lmfuse.core.config import from_dict, load_config
from lmfuse.core.loading import DTYPES


@dataclass
class Slice:
    """A half-open range of decoder layers of one model."""

    validate_later: ClassVar[bool] = True  # plan_graft validates, with the models: all problems at once

    model: str
    """Model directory, ``zoo:NAME`` or a hub id present in the local cache."""
    layers: list[int]
    """``[start, end)``: layers ``start, ..., end - 1`` in order."""

    def validate(self) -> list[str]:
        if len(self.layers) != 2:
            return [f"layers: expected [start, end] (2 integers), found {self.layers}"]
        start, end = self.layers
        if start < 0 or end <= start:
            return [f"layers: expected 0 <= start < end (half-open [start, end)), found [{start}, {end}]"]
        return []

    @property
    def range(self) -> range:
        return range(self.layers[0], self.layers[1])


@dataclass
class GraftRecipe:
    """Slices stacked in order into one model, plus where embeddings and head come from."""

    validate_later: ClassVar[bool] = True  # plan_graft validates, with the models: all problems at once

    slices: list[Slice]
    embeddings: str | None = None
    """Model whose input embeddings are used; default: the first slice's model."""
    head: str | None = None
    """Model whose final norm and ``lm_head`` are used; default: the last slice's model."""
    dtype: str | None = None
    """Output dtype (``bfloat16``, ``float16``, ``float32``); default: keep the source dtypes."""
    tie_word_embeddings: bool | None = None
    """Output tying; default: the embeddings model's setting. ``false`` unties a tied source."""
    check_tokenizer: bool = True
    """Require identical tokenizers across models; ``false`` accepts equal-sized vocabularies."""
    extra: dict[str, str] = field(default_factory=dict)
    """Free-form notes copied into the provenance (e.g. ``{"purpose": "SOLAR-style DUS"}``)."""

    def validate(self) -> list[str]:
        problems = []
        if not self.slices:
            problems.append("slices: expected at least one slice, found none")
        names = self.model_names()
        for key in ("embeddings", "head"):
            value = getattr(self, key)
            if value is not None and value not in names:
                problems.append(f"{key}: {value!r} is not the model of any slice; expected one of {names}")
        if self.dtype is not None and self.dtype not in DTYPES:
            problems.append(f"dtype: expected one of {', '.join(DTYPES)}, found {self.dtype!r}")
        return problems

    def model_names(self) -> list[str]:
        """Distinct slice models, in order of first use."""
        return list(dict.fromkeys(s.model for s in self.slices))

    @property
    def embeddings_model(self) -> str:
        return self.embeddings if self.embeddings is not None else self.slices[0].model

    @property
    def head_model(self) -> str:
        return self.head if self.head is not None else self.slices[-1].model

    def layer_map(self) -> list[tuple[str, int]]:
        """Output layer ``i`` ← ``(model, source layer)``."""
        return [(s.model, j) for s in self.slices for j in s.range]


def load_recipe(path: str) -> GraftRecipe:
    """Read and check a YAML recipe (every problem at once, as one ``ConfigError``)."""
    return load_config(GraftRecipe, path)


def recipe_from_dict(data: dict) -> GraftRecipe:
    return from_dict(GraftRecipe, data)


def dus_recipe(model: str, num_layers: int, drop: int, **options) -> GraftRecipe:
    """SOLAR depth up-scaling: layers ``[0, n - drop)`` then ``[drop, n)`` → ``2 (n - drop)`` layers."""
    return GraftRecipe(
        slices=[Slice(model, [0, num_layers - drop]), Slice(model, [drop, num_layers])], **options
    )


def splice_recipe(a: str, b: str, b_layers: int, first: int, last: int, **options) -> GraftRecipe:
    """The first ``first`` layers of ``a`` then the last ``last`` layers of ``b`` (``b_layers`` deep)."""
    return GraftRecipe(slices=[Slice(a, [0, first]), Slice(b, [b_layers - last, b_layers])], **options)
