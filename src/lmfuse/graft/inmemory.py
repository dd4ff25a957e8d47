"""Graft loaded models in memory: ``graft_model(models, recipe) -> PreTrainedModel``, no disk.

The new model is a copy of the embeddings model whose decoder-layer list is replaced by copies of the
chosen source layers (sources are never modified or shared). Every copied layer's attention
``layer_idx`` is renumbered to its new position: a copied layer keeps its old index otherwise, and
two layers writing the same KV-cache slot make cached generation differ from uncached.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from lmfuse.errors import ConfigError
from lmfuse.graft.plan import remap_layers
from lmfuse.graft.recipe import GraftRecipe


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The model's decoder-layer list (a ``ModuleList`` named ``...layers`` with one entry per layer)."""
    n = model.config.num_hidden_layers
    found = [
        m
        for name, m in model.named_modules()
        if name.split(".")[-1] == "layers" and isinstance(m, nn.ModuleList)
    ]
    found = [m for m in found if len(m) == n]
    if len(found) != 1:
        raise ConfigError(
            f"{type(model).__name__}: expected one ModuleList named 'layers' with {n} decoder layers, found "
            f"{len(found)}; grafting supports models whose layers are '<prefix>.layers.<i>'"
        )
    return found[0]


def renumber_layer_idx(layer: nn.Module, index: int) -> int:
    """Set ``layer_idx`` on every submodule that has one (attention, cache users); returns how many."""
    count = 0
    for module in layer.modules():
        if isinstance(getattr(module, "layer_idx", None), int):
            module.layer_idx = index
            count += 1
    return count


def _check(recipe: GraftRecipe, models: dict[str, Any]) -> None:
    problems = list(recipe.validate())
    for i, s in enumerate(recipe.slices):
        problems += [f"slices[{i}].{p}" for p in s.validate()]
        if s.model not in models:
            problems.append(f"slices[{i}].model: no model named {s.model!r}; passed: {sorted(models)}")
        elif not s.validate() and s.layers[1] > models[s.model].config.num_hidden_layers:
            n = models[s.model].config.num_hidden_layers
            problems.append(f"slices[{i}].layers: {s.layers} is out of range for {s.model!r} ({n} layers)")
    if problems:
        raise ConfigError(problems, source="graft_model")
    ref = models[recipe.slices[0].model]
    ref_shapes = [tuple(p.shape) for p in decoder_layers(ref)[recipe.slices[0].layers[0]].parameters()]
    for name, m in models.items():
        if type(m) is not type(ref):
            problems.append(
                f"{name!r} is a {type(m).__name__}, {recipe.slices[0].model!r} a {type(ref).__name__}"
            )
        elif [tuple(p.shape) for p in decoder_layers(m)[0].parameters()] != ref_shapes:
            problems.append(f"layers of {name!r} and {recipe.slices[0].model!r} have different shapes")
        elif m.config.vocab_size != ref.config.vocab_size:
            problems.append(
                f"vocabulary sizes differ: {m.config.vocab_size} ({name!r}) vs {ref.config.vocab_size}"
            )
    emb, head = models[recipe.embeddings_model], models[recipe.head_model]
    tied = bool(getattr(emb.config, "tie_word_embeddings", False))
    if tied and recipe.tie_word_embeddings is None and head is not emb:
        problems.append(
            f"{recipe.embeddings_model!r} ties lm_head to its embeddings, so the head of {recipe.head_model!r} "
            "would be ignored; set tie_word_embeddings=False or head to the embeddings model"
        )
    if problems:
        raise ConfigError(problems, source="graft_model")


def graft_model(models: nn.Module | Mapping[str, nn.Module], recipe: GraftRecipe) -> nn.Module:
    """A new model built from ``recipe``; ``models`` maps the recipe's model names to loaded models.

    A single model serves every name (e.g. a DUS of one model). Weights are copied, never shared with
    the sources. Raises ``ConfigError`` listing every problem before building anything.
    """
    if isinstance(models, nn.Module):
        models = {name: models for name in recipe.model_names()}
    models = dict(models)
    _check(recipe, models)
    emb_model, head_model = models[recipe.embeddings_model], models[recipe.head_model]
    layer_map = recipe.layer_map()
    problems: list[str] = []
    configs = {name: m.config.to_dict() for name, m in models.items()}
    remapped = remap_layers(recipe.embeddings_model, configs, layer_map, problems)
    if problems:
        raise ConfigError(problems, source="graft_model")
    config = copy.deepcopy(emb_model.config)
    for key, value in remapped.items():
        if configs[recipe.embeddings_model].get(key) != value:
            setattr(config, key, value)
    src_layers = decoder_layers(emb_model)
    # Copy everything but the layer list (replaced below); every copied module sees the new config.
    new = copy.deepcopy(emb_model, memo={id(src_layers): nn.ModuleList(), id(emb_model.config): config})
    layers = decoder_layers_unchecked(new)
    for i, (name, j) in enumerate(layer_map):
        source = models[name]
        layer = copy.deepcopy(decoder_layers(source)[j], memo={id(source.config): config})
        renumber_layer_idx(layer, i)
        layers.append(layer)
    _take_head(new, emb_model, head_model, recipe)
    return new


def decoder_layers_unchecked(model: nn.Module) -> nn.ModuleList:
    """The (possibly empty) ``layers`` list of a model under construction."""
    return next(m for name, m in model.named_modules() if name.split(".")[-1] == "layers")


def _names_of(model: nn.Module, weight: torch.Tensor) -> set[str]:
    return {n for n, p in model.named_parameters(remove_duplicate=False) if p is weight}


def _take_head(new: nn.Module, emb_model: nn.Module, head_model: nn.Module, recipe: GraftRecipe) -> None:
    """Final norm (and other non-layer tensors) and lm_head from ``head_model``; tying as asked."""
    emb_tied = bool(getattr(emb_model.config, "tie_word_embeddings", False))
    tie = recipe.tie_word_embeddings if recipe.tie_word_embeddings is not None else emb_tied
    head_weight = head_model.get_output_embeddings().weight
    if head_model is not emb_model:
        layer_list = decoder_layers(head_model)
        prefix = next(n for n, m in head_model.named_modules() if m is layer_list) + "."
        skip = _names_of(head_model, head_model.get_input_embeddings().weight) | _names_of(
            head_model, head_weight
        )
        state = {
            k: v for k, v in head_model.state_dict().items() if not k.startswith(prefix) and k not in skip
        }
        _, unexpected = new.load_state_dict(state, strict=False)
        if unexpected:
            raise ConfigError(f"head tensors of {recipe.head_model!r} do not fit the new model: {unexpected}")
    if tie:
        new.get_output_embeddings().weight = new.get_input_embeddings().weight
    elif head_model is not emb_model or emb_tied:
        weight = head_weight.detach().clone()
        new.get_output_embeddings().weight = nn.Parameter(weight, requires_grad=head_weight.requires_grad)
    new.config.tie_word_embeddings = tie
