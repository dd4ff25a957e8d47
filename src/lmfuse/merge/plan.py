"""The merge plan: from a recipe and the models' headers, every output tensor, its inputs and its
resolved parameters, checked before a byte is written.

``plan_merge`` reads configs and safetensors headers only. It checks the recipe, every model
(openable, one architecture, equal layer shapes, one tokenizer, the same embedding tying), the layer
ranges against each model's depth and the output directory, and raises one ``ConfigError`` listing
every problem found. Gradients and filters are resolved here to one value per tensor and model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lmfuse.core.atomic import check_output_dir
from lmfuse.core.loading import DTYPES
from lmfuse.core.tokenizers import tokenizer_difference
from lmfuse.errors import ConfigError, LmfuseError
from lmfuse.graft.plan import RUNTIME_BYTES, remap_layers
from lmfuse.graft.sources import SourceModel, meta_model, open_source
from lmfuse.merge.methods import MergeMethod
from lmfuse.merge.recipe import MergeRecipe, merge_groups, resolve_params
from lmfuse.merge.union import UnionVocab, build_union


@dataclass
class MergeJob:
    """Output tensor ``name`` = method(inputs, base) with these parameters."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    """Written dtype."""
    inputs: list[tuple[str, str]]
    """``(model, tensor name)`` of each merged model, in recipe order."""
    base: tuple[str, str] | None
    per_model: list[dict[str, Any]]
    params: dict[str, Any]
    layer: int | None = None
    """Output layer, ``None`` for embeddings, final norm and head."""
    rows: list[list[int]] | None = None
    """With ``tokenizer_source: union``, for embeddings and ``lm_head``: per source (base first), the
    source row of each union token (−1: the source lacks it)."""


@dataclass
class MergePlan:
    """Everything needed to write the merge, computed before writing."""

    recipe: MergeRecipe
    method: MergeMethod
    sources: dict[str, SourceModel]
    jobs: list[MergeJob]
    config: dict[str, Any]
    work_dtype: torch.dtype
    tokenizer_model: str
    num_layers: int
    union: UnionVocab | None = None
    output_bytes: int = 0
    peak_memory_bytes: int = 0
    layer_map: list[tuple[str, int]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The ``merge_plan.json`` record: per tensor, its inputs and resolved parameters."""
        return {
            "merge_method": self.method.name,
            "work_dtype": str(self.work_dtype).removeprefix("torch."),
            "num_hidden_layers": self.num_layers,
            "models": {name: str(src.directory) for name, src in self.sources.items()},
            "tensors": {
                j.name: {
                    "inputs": [f"{m}:{t}" for m, t in j.inputs],
                    "base": None if j.base is None else f"{j.base[0]}:{j.base[1]}",
                    "per_model": j.per_model,
                    "parameters": j.params,
                }
                for j in self.jobs
            },
        }


def plan_merge(
    recipe: MergeRecipe,
    out: str | Path | None = None,
    overwrite: bool = False,
    opened: dict[str, SourceModel] | None = None,
) -> MergePlan:
    """Check ``recipe`` against its models (and ``out``); raises ``ConfigError`` with every problem.

    ``opened`` caches opened models by name across calls (merge search plans many candidates).
    """
    opened = {} if opened is None else opened
    problems = list(recipe.validate())
    if out is not None:
        try:
            check_output_dir(out, overwrite)
        except LmfuseError as exc:
            problems.append(str(exc))
    sources: dict[str, SourceModel] = {}
    for name in recipe.model_names():
        try:
            if name not in opened:
                opened[name] = open_source(name)
            sources[name] = opened[name]
        except LmfuseError as exc:
            problems.append(str(exc))
    if problems:
        raise ConfigError(problems, source="merge recipe")
    method = recipe.method
    assert method is not None  # validate() reported an unknown method above
    problems += _compatibility_problems(recipe, sources)
    slices, slice_problems = _slices(recipe, sources)
    problems += slice_problems
    if problems:
        raise ConfigError(problems, source="merge recipe")
    ref = sources[recipe.base_model or recipe.model_names()[0]]
    work = _work_dtype(recipe, sources)
    union = _union(recipe, ref, sources, problems) if recipe.tokenizer_source == "union" else None
    if problems:
        raise ConfigError(problems, source="merge recipe")
    jobs = _jobs(recipe, method, sources, ref, slices, problems, union)
    layer_map = [(m, j) for sl in slices for (m, j) in _ref_layers(sl)]
    config = remap_layers(ref.name, {n: s.config for n, s in sources.items()}, layer_map, problems)
    if union is not None:
        config["vocab_size"] = union.size
    if recipe.out_dtype or recipe.dtype:
        config["dtype"] = recipe.out_dtype or recipe.dtype
        config["dtype"] = str(DTYPES[config["dtype"]]).removeprefix("torch.")
        config.pop("torch_dtype", None)
    if problems:
        raise ConfigError(problems, source="merge recipe")
    try:
        meta_model(config)
    except Exception as exc:  # noqa: BLE001 - transformers rejects configs with many exception types
        raise ConfigError(f"the output config does not load in transformers: {exc}", "merge recipe") from None
    tok = recipe.tokenizer_source
    tok_model = ref.name if tok in (None, "base", "union") else tok
    plan = MergePlan(
        recipe, method, sources, jobs, config, work, tok_model, len(layer_map), union, layer_map=layer_map
    )
    plan.output_bytes = sum(j.dtype.itemsize * math.prod(j.shape) for j in jobs)
    largest = max(math.prod(j.shape) for j in jobs) * work.itemsize
    n_inputs = max(len(j.inputs) + (j.base is not None) for j in jobs)
    plan.peak_memory_bytes = RUNTIME_BYTES + (n_inputs + 2) * largest
    return plan


def _compatibility_problems(recipe: MergeRecipe, sources: dict[str, SourceModel]) -> list[str]:
    problems = []
    ref = sources[recipe.base_model or recipe.model_names()[0]]
    for name, src in sources.items():
        if src is ref:
            continue
        if src.model_type != ref.model_type or src.config.get("architectures") != ref.config.get(
            "architectures"
        ):
            problems.append(
                f"model {name!r} is {src.model_type!r} {src.config.get('architectures')} but {ref.name!r} is "
                f"{ref.model_type!r} {ref.config.get('architectures')}; merging needs one architecture"
            )
            continue
        if src.tied != ref.tied:
            problems.append(
                f"tie_word_embeddings differs: {ref.name!r} {ref.tied}, {name!r} {src.tied}; merging a tied "
                "with an untied model would drop one lm_head — untie the tied one first (lmfuse graft)"
            )
        for key in ("hidden_size", "intermediate_size", "num_attention_heads", "num_key_value_heads"):
            if src.config.get(key) != ref.config.get(key):
                problems.append(
                    f"{key} differs: {ref.name!r} {ref.config.get(key)}, {name!r} {src.config.get(key)}; "
                    "weight merging needs models of one shape (fine-tunes of one base)"
                )
        if recipe.tokenizer_source == "union":
            continue  # vocabularies may differ: embeddings are merged over their union
        if src.config.get("vocab_size") != ref.config.get("vocab_size"):
            problems.append(
                f"vocabulary sizes differ: {ref.name!r} has {ref.config.get('vocab_size')} tokens, {name!r} has "
                f"{src.config.get('vocab_size')}; merge models that share a tokenizer"
            )
        elif diff := tokenizer_difference(ref.directory, src.directory, ref.name, name):
            problems.append(
                f"{diff}; merging embeddings row by row needs one tokenizer (or tokenizer_source: union)"
            )
    return problems


Slice = list[tuple[str, int, int, dict[str, Any], str]]
"""One slice: ``(model, start, end, parameters, where)`` per source, base first when it has one."""


def _slices(recipe: MergeRecipe, sources: dict[str, SourceModel]) -> tuple[list[Slice], list[str]]:
    """The recipe's sources as slices with explicit layer ranges, and out-of-range problems."""
    method = recipe.method
    base = recipe.base_model if method is not None and method.base != "unused" else None
    problems: list[str] = []
    slices: list[Slice] = []
    groups = merge_groups(recipe)
    if recipe.models is not None:
        depth = {name: sources[name].num_layers for name in recipe.model_names()}
        n = depth[recipe.base_model or recipe.models[0].model]
        for name, d in depth.items():
            if d != n:
                problems.append(f"model {name!r} has {d} layers but {recipe.model_names()[0]!r} has {n}; "
                                "use slices: with layer_range to merge models of different depth")  # fmt: skip
        entries = [(m, 0, n, p, w) for m, p, w in groups[0]]
        slices.append(([(base, 0, n, {}, "base_model")] if base else []) + entries)
        return slices, problems
    for i, (spec, group) in enumerate(zip(recipe.slices or [], groups, strict=True)):
        ranges = {s.model: s.layer_range for s in spec.sources}
        for j, s in enumerate(spec.sources):
            n = sources[s.model].num_layers
            if s.layer_range[1] > n:
                problems.append(
                    f"slices[{i}].sources[{j}].layer_range: {s.layer_range} is out of range for {s.model!r}, "
                    f"which has {n} layers; expected 0 <= start < end <= {n} (ranges are half-open)"
                )
        entries = [(m, *ranges[m], p, w) for m, p, w in group]
        if base and base not in ranges:
            problems.append(f"slices[{i}]: the base model {base!r} is not among its sources")
            continue
        slices.append(([(base, *ranges[base], {}, f"slices[{i}]")] if base else []) + entries)
    return slices, problems


def _ref_layers(sl: Slice) -> list[tuple[str, int]]:
    model, start, end = sl[0][:3]
    return [(model, j) for j in range(start, end)]


def _work_dtype(recipe: MergeRecipe, sources: dict[str, SourceModel]) -> torch.dtype:
    """mergekit's ``dtype`` when given; else float32, or float64 when a model stores float32 (so a
    merge that should return an input returns it bit for bit after rounding to the stored dtype)."""
    if recipe.dtype is not None:
        return DTYPES[recipe.dtype]
    stored = {src.reader.meta(src.embed_names[0])[1] for src in sources.values()}
    return torch.float64 if stored & {torch.float32, torch.float64} else torch.float32


def _jobs(
    recipe: MergeRecipe,
    method: MergeMethod,
    sources: dict[str, SourceModel],
    ref: SourceModel,
    slices: list[Slice],
    problems: list[str],
    union: UnionVocab | None = None,
) -> list[MergeJob]:
    """One job per output tensor: embeddings (position 0), each layer's tensors, then the rest (1)."""
    named = recipe.out_dtype or recipe.dtype
    out_dtype = DTYPES[named] if named else None
    has_base = method.base != "unused" and recipe.base_model is not None
    jobs: list[MergeJob] = []

    def add(name: str, srcs: list[tuple[str, str]], sl: Slice, position: float, layer: int | None) -> None:
        base, inputs = (srcs[0], srcs[1:]) if has_base else (None, srcs)
        per_model = []
        for _model, _, _, p, where in sl[1:] if has_base else sl:
            values, missing = resolve_params([recipe.parameters, p], method.model_params, name, position)
            problems.extend(
                f"{where}.parameters.{k}: no value for tensor {name!r} (no filter matches)" for k in missing
            )
            per_model.append(values)
        params, missing = resolve_params([recipe.parameters], method.global_params, name, position)
        problems.extend(f"parameters.{k}: no value for tensor {name!r} (no filter matches)" for k in missing)
        rows = None
        if union is not None and layer is None and _is_vocab_tensor(sources, srcs[0]):
            rows = [union.rows[m] for m, _ in srcs]
        meta = _common_meta(sources, srcs, name, problems, vocab=rows is not None)
        if meta is not None:
            shape, stored = meta
            if rows is not None:
                shape = (union.size, *shape[1:])
            jobs.append(
                MergeJob(name, shape, out_dtype or stored, inputs, base, per_model, params, layer, rows)
            )

    first, last = slices[0], slices[-1]
    for t in ref.embed_names:
        add(t, [(e[0], t) for e in first], first, 0.0, None)
    out_layer = 0
    for sl in slices:
        length = sl[0][2] - sl[0][1]
        for k in range(length):
            position = k / (length - 1) if length > 1 else 0.0
            rests = sources[sl[0][0]].layers[sl[0][1] + k]
            for e in sl[1:]:
                other = sources[e[0]].layers[e[1] + k]
                if set(other) != set(rests):
                    problems.append(
                        f"layer {e[1] + k} of {e[0]!r} and layer {sl[0][1] + k} of {sl[0][0]!r} hold different "
                        f"tensors ({sorted(set(other) ^ set(rests))[:3]}); merging needs one architecture"
                    )
            for rest in rests:
                srcs = [(e[0], sources[e[0]].layers[e[1] + k].get(rest, "?")) for e in sl]
                add(f"{ref.prefix}.{out_layer}.{rest}", srcs, sl, position, out_layer)
            out_layer += 1
    for t in ref.other_names:
        add(t, [(e[0], t) for e in last], last, 1.0, None)
    return jobs


def _is_vocab_tensor(sources: dict[str, SourceModel], src: tuple[str, str]) -> bool:
    """An input embedding, or a 2-D non-layer tensor with one row per token (``lm_head``)."""
    model, tensor = src
    shape, _ = sources[model].reader.meta(tensor)
    vocab = sources[model].config.get("vocab_size")
    return tensor in sources[model].embed_names or (len(shape) == 2 and shape[0] == vocab)


def _union(recipe: MergeRecipe, ref: SourceModel, sources: dict[str, SourceModel], problems: list[str]):
    """The union vocabulary, after checking every model's token ids fit its embedding rows."""
    try:
        union = build_union(ref.name, {name: src.directory for name, src in sources.items()})
    except Exception as exc:  # noqa: BLE001 - tokenizers fail to load in many ways
        problems.append(f"tokenizer_source: union: cannot load every model's tokenizer ({exc})")
        return None
    for name, rows in union.rows.items():
        n_rows = sources[name].reader.meta(sources[name].embed_names[0])[0][0]
        if max(rows) >= n_rows:
            problems.append(
                f"model {name!r}: its tokenizer has ids up to {max(rows)} but its embedding has {n_rows} rows"
            )
    return union


def _common_meta(
    sources: dict[str, SourceModel],
    srcs: list[tuple[str, str]],
    name: str,
    problems: list[str],
    vocab: bool = False,
) -> tuple[tuple[int, ...], torch.dtype] | None:
    """Shape and stored dtype of the first input, after checking every input has it with that shape
    (all but the first dimension for ``vocab`` tensors, whose rows follow each model's tokenizer)."""
    metas = []
    for model, tensor in srcs:
        if tensor not in sources[model].reader:
            problems.append(f"tensor {tensor!r} (for output {name!r}) is missing from {model!r}")
            return None
        metas.append(sources[model].reader.meta(tensor))
    shapes = {tuple(s)[1:] if vocab else tuple(s) for s, _ in metas}
    if len(shapes) > 1:
        problems.append(
            f"tensor {name!r} has different shapes across models: "
            + ", ".join(f"{m} {list(s)}" for (m, _), (s, _) in zip(srcs, metas, strict=True))
        )
        return None
    return tuple(metas[0][0]), metas[0][1]
