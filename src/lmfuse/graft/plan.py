"""The graft plan: from a recipe and the source models' headers, every output tensor and the config.

``plan_graft`` reads configs and safetensors headers only (no weights), checks everything that can be
wrong — unknown models or layouts, layer ranges out of bounds, different architectures, layer shapes,
vocabularies or dtypes, tied embeddings that would silently drop a head, an output directory in the
way — and raises one ``ConfigError`` listing every problem. Only a plan that passed is ever written.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lmfuse.core.atomic import check_output_dir
from lmfuse.core.export import ExportTensor, from_source
from lmfuse.core.loading import resolve_dtype
from lmfuse.core.tokenizers import tokenizer_difference
from lmfuse.errors import ConfigError, LmfuseError
from lmfuse.graft.recipe import GraftRecipe
from lmfuse.graft.sources import SourceModel, layer_signature, meta_model, open_source

NOT_PER_LAYER = frozenset({"architectures", "bos_token_id", "eos_token_id", "pad_token_id"})
RUNTIME_BYTES = 450 * 1024**2
"""Resident memory of Python + torch + transformers before any tensor is touched (measured, rounded up)."""


@dataclass
class PlannedTensor:
    """Output tensor ``name`` ← tensor ``source`` of model ``model``."""

    name: str
    model: str
    source: str
    layer: int | None = None
    """Output layer index, ``None`` for embeddings and head."""


@dataclass
class GraftPlan:
    """Everything needed to write the output, computed before writing a byte."""

    recipe: GraftRecipe
    sources: dict[str, SourceModel]
    layer_map: list[tuple[str, int]]
    tensors: list[PlannedTensor]
    config: dict[str, Any]
    num_parameters: int
    output_bytes: int
    peak_memory_bytes: int

    def export_tensors(self) -> list[ExportTensor]:
        dtype = None if self.recipe.dtype is None else resolve_dtype(self.recipe.dtype)
        return [from_source(self.sources[t.model].reader, t.source, t.name, dtype) for t in self.tensors]

    def to_json(self) -> dict[str, Any]:
        """The ``graft_plan.json`` record: which source layer and tensor each output one came from."""
        return {
            "num_hidden_layers": len(self.layer_map),
            "num_parameters": self.num_parameters,
            "layers": [
                {"layer": i, "model": m, "source_layer": j} for i, (m, j) in enumerate(self.layer_map)
            ],
            "embeddings": self.recipe.embeddings_model,
            "head": self.recipe.head_model,
            "models": {name: str(src.directory) for name, src in self.sources.items()},
            "tensors": {t.name: {"model": t.model, "tensor": t.source} for t in self.tensors},
        }


def plan_graft(
    recipe: GraftRecipe, out: str | Path | None = None, overwrite: bool = False, check_config: bool = True
) -> GraftPlan:
    """Check ``recipe`` against its models (and ``out``, if given); raises ``ConfigError`` with all problems.

    ``check_config=False`` (``--dry-run``) skips only the last check, that transformers accepts the
    output config (it imports transformers: seconds); ``graft`` always makes it before writing. Models
    of the common decoder families are then planned from config.json and the safetensors headers alone.
    """
    problems = _recipe_problems(recipe)
    if out is not None:
        try:
            check_output_dir(out, overwrite)
        except LmfuseError as exc:
            problems.append(str(exc))
    sources: dict[str, SourceModel] = {}
    for name in recipe.model_names() if recipe.slices else []:
        try:
            sources[name] = open_source(name)
        except LmfuseError as exc:
            problems.append(str(exc))
    bounds = _bounds_problems(recipe, sources)
    if problems:  # a malformed recipe or a model that cannot be opened: nothing more can be checked
        raise ConfigError(problems + bounds, source="graft recipe")
    problems = bounds + _compatibility_problems(recipe, sources)
    tie, tie_problems = _output_tying(recipe, sources)
    problems += tie_problems
    if problems:
        raise ConfigError(problems, source="graft recipe")
    config = _output_config(recipe, sources, tie, problems)
    if problems:
        raise ConfigError(problems, source="graft recipe")
    head = sources[recipe.head_model]
    meta = None
    if check_config or head.head_name is None:
        try:
            meta = meta_model(config)
        except Exception as exc:  # noqa: BLE001 - transformers rejects configs with many exception types
            raise ConfigError(
                f"the output config does not load in transformers: {exc}", "graft recipe"
            ) from None
    lm_head = head.head_name if head.head_name is not None else _lm_head_name(meta)
    tensors = _plan_tensors(recipe, sources, tie, lm_head)
    plan = GraftPlan(recipe, sources, recipe.layer_map(), tensors, config, 0, 0, 0)
    exports = plan.export_tensors()
    plan.num_parameters = sum(math.prod(t.shape) for t in exports)  # a tied head is not a tensor of its own
    plan.output_bytes = sum(t.nbytes for t in exports)
    plan.peak_memory_bytes = RUNTIME_BYTES + max(
        [2 * t.nbytes for t in exports if t.raw is None] or [0]
    )  # a tensor that is cast is held twice (source + result); byte copies hold nothing
    return plan


def _recipe_problems(recipe: GraftRecipe) -> list[str]:
    problems = list(recipe.validate())
    for i, s in enumerate(recipe.slices):
        problems += [f"slices[{i}].{p}" for p in s.validate()]
    return problems


def _bounds_problems(recipe: GraftRecipe, sources: dict[str, SourceModel]) -> list[str]:
    problems = []
    for i, s in enumerate(recipe.slices):
        if s.model not in sources or s.validate():
            continue  # already reported: the model could not be opened, or the range is malformed
        n = sources[s.model].num_layers
        if s.layers[1] > n:
            problems.append(
                f"slices[{i}].layers: [{s.layers[0]}, {s.layers[1]}] is out of range for {s.model!r}, which "
                f"has {n} layers; expected 0 <= start < end <= {n} (ranges are half-open)"
            )
    return problems


def _compatibility_problems(recipe: GraftRecipe, sources: dict[str, SourceModel]) -> list[str]:
    problems = []
    first = recipe.slices[0]
    ref = sources[first.model]
    ref_sig = layer_signature(ref, 0)
    for name, src in sources.items():
        if src.model_type != ref.model_type:
            problems.append(
                f"model {name!r} is a {src.model_type!r} model but {ref.name!r} is {ref.model_type!r}; "
                "grafting needs one architecture family"
            )
            continue
        if src.config.get("vocab_size") != ref.config.get("vocab_size"):
            problems.append(
                f"vocabulary sizes differ: {ref.name!r} has {ref.config.get('vocab_size')} tokens, {name!r} "
                f"has {src.config.get('vocab_size')}; graft models that share a tokenizer"
            )
        elif recipe.check_tokenizer and (
            diff := tokenizer_difference(ref.directory, src.directory, ref.name, name)
        ):
            problems.append(
                f"tokenizers of {ref.name!r} and {name!r} differ ({diff}); graft models that share a tokenizer, "
                "or set check_tokenizer: false (--no-check-tokenizer) if the vocabularies are known to agree"
            )
    ref_shapes = {k: shape for k, (shape, _) in ref_sig.items()}
    bad: dict[str, tuple[list[int], tuple]] = {}
    in_range = {(s.model, j) for s in recipe.slices for j in s.range if j < sources[s.model].num_layers}
    for model, j in sorted(in_range):
        shapes = {k: shape for k, (shape, _) in layer_signature(sources[model], j).items()}
        if shapes != ref_shapes:
            k = sorted(x for x in set(shapes) | set(ref_shapes) if shapes.get(x) != ref_shapes.get(x))[0]
            bad.setdefault(model, ([], (k, shapes.get(k, "missing"), ref_shapes.get(k, "missing"))))[
                0
            ].append(j)
    for model, (layers, (k, mine, theirs)) in bad.items():
        problems.append(
            f"layers {layers} of {model!r} do not match layer 0 of {first.model!r}: "
            f"{k} has shape {mine} vs {theirs}; grafting needs identical layer shapes"
        )
    dtypes = {name: _dominant_dtype(src) for name, src in sources.items()}
    if recipe.dtype is None and len(set(dtypes.values())) > 1:
        problems.append(f"models store different dtypes ({dtypes}); set dtype (--dtype) to choose one")
    return problems


def _dominant_dtype(src: SourceModel) -> str:
    return next(iter(layer_signature(src, 0).values()))[1]


def _output_tying(recipe: GraftRecipe, sources: dict[str, SourceModel]) -> tuple[bool, list[str]]:
    emb, head = sources[recipe.embeddings_model], sources[recipe.head_model]
    tie = recipe.tie_word_embeddings if recipe.tie_word_embeddings is not None else emb.tied
    if tie and recipe.tie_word_embeddings is None and head is not emb:
        return tie, [
            f"{emb.name!r} ties lm_head to its input embeddings, so the output would ignore the lm_head of "
            f"head model {head.name!r}; set tie_word_embeddings: false (--untie-embeddings) to write "
            f"{head.name!r}'s lm_head, "
            f"or head: {emb.name!r}"
        ]
    return tie, []


def remap_layers(
    base: str, configs: dict[str, dict[str, Any]], layer_map: list[tuple[str, int]], problems: list[str]
) -> dict[str, Any]:
    """Config ``base`` with ``num_hidden_layers`` and every per-layer list remapped through ``layer_map``.

    A per-layer list is any list whose length is the model's layer count (``layer_types``...); output
    layer ``i`` gets the entry of its source layer in its source model's config.
    """
    ref = configs[base]
    n_of = {name: int(c.get("num_hidden_layers", -1)) for name, c in configs.items()}
    config = dict(ref)
    for key, value in ref.items():
        if key in NOT_PER_LAYER or not isinstance(value, list) or len(value) != n_of[base]:
            continue
        bad = [n for n, c in configs.items() if not isinstance(c.get(key), list) or len(c[key]) != n_of[n]]
        if bad:
            problems.append(f"config field {key!r} is a per-layer list in {base!r} but not in {bad}")
            continue
        config[key] = [configs[m][key][j] for m, j in layer_map]
    config["num_hidden_layers"] = len(layer_map)
    return config


def _output_config(
    recipe: GraftRecipe, sources: dict[str, SourceModel], tie: bool, problems: list[str]
) -> dict[str, Any]:
    """The embeddings model's config, layers remapped, tying and dtype set."""
    configs = {name: src.config for name, src in sources.items()}
    config = remap_layers(recipe.embeddings_model, configs, recipe.layer_map(), problems)
    config["tie_word_embeddings"] = tie
    if recipe.dtype is not None:
        config["dtype"] = str(resolve_dtype(recipe.dtype)).removeprefix("torch.")
        config.pop("torch_dtype", None)
    return config


def _plan_tensors(
    recipe: GraftRecipe, sources: dict[str, SourceModel], tie: bool, lm_head: str | None
) -> list[PlannedTensor]:
    emb, head = sources[recipe.embeddings_model], sources[recipe.head_model]
    out = [PlannedTensor(t, emb.name, t) for t in emb.embed_names]
    prefix = emb.prefix
    for i, (model, j) in enumerate(recipe.layer_map()):
        for rest, tensor in sources[model].layers[j].items():
            out.append(PlannedTensor(f"{prefix}.{i}.{rest}", model, tensor, layer=i))
    for t in head.other_names:
        if not (tie and t == lm_head):
            out.append(PlannedTensor(t, head.name, t))
    if not tie and lm_head and lm_head not in head.other_names:
        # The head model ties its lm_head to its embeddings: write those as an untied lm_head.
        out.append(PlannedTensor(lm_head, head.name, head.embed_names[0]))
    return out


def _lm_head_name(meta: torch.nn.Module) -> str | None:
    head = meta.get_output_embeddings()
    if head is None:
        return None
    return next((f"{n}.weight" for n, m in meta.named_modules() if m is head), None)
