"""The merge recipe: mergekit's YAML format, read as is, checked completely before any model is opened.

```yaml
merge_method: ties
base_model: path/to/base
models:
  - model: path/to/a
    parameters: {weight: 0.5, density: 0.5}
  - model: path/to/b
    parameters:
      weight: [0, 0.5, 1]          # a gradient: interpolated across layers
      density:                     # filters: first one whose text is in the tensor name wins
        - {filter: self_attn, value: 0.3}
        - {filter: mlp, value: [0.2, 0.8]}
        - {value: 0.5}             # everything else
parameters: {normalize: true, lambda: 1.0}   # global parameters, and defaults of the per-model ones
dtype: float32                     # computation dtype (default float32, float64 for float32 models)
out_dtype: bfloat16                # written dtype (default: dtype if given, else the base's storage)
tokenizer_source: base             # base | union | one of the models
random_seed: 0                     # DARE / DELLA masks
```

``slices:`` (each ``sources: [{model, layer_range: [start, end), parameters}]``) replaces ``models:``
to merge different layer ranges; ``passthrough`` stacks one-source slices (done by ``lmfuse graft``).
Unknown keys are errors with a did-you-mean; keys mergekit knows that lmfuse does not implement are
refused by name, never dropped. ``value_at`` resolves a parameter to one number for one tensor.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from lmfuse.core.config import from_dict, load_yaml
from lmfuse.core.loading import DTYPES
from lmfuse.errors import ConfigError
from lmfuse.merge.methods import REQUIRED, MergeMethod, get_method, method_names

REFUSED_TOP = {
    "tokenizer": "mergekit's tokenizer block is not supported; use tokenizer_source: base, union or a model",
    "chat_template": "chat_template is not supported; edit tokenizer_config.json of the output instead",
    "name": "multi-stage recipes (several YAML documents with name:) are not supported; run each stage",
    "modules": "per-module recipes (modules:) are not supported",
}
REFUSED_PARAMS = {
    "filter_wise": "model_stock's filter_wise is not supported (lmfuse computes one angle per tensor)",
    "consensus_method": "only TIES' sum sign election is implemented; remove consensus_method",
    "scale": "passthrough's scale is not supported",
}


@dataclass
class ModelSpec:
    """One entry of ``models:``."""

    model: str
    """Model directory, ``zoo:NAME`` or a hub id in the local cache."""
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class SourceSpec:
    """One source of a slice: a half-open layer range of a model."""

    model: str
    layer_range: list[int]
    """``[start, end)``."""
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class SliceSpec:
    """Output layers merged from one layer range of each source (all ranges of equal length)."""

    sources: list[SourceSpec]
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class MergeRecipe:
    """A mergekit recipe (the fields mergekit reads, with the same meaning)."""

    merge_method: str
    base_model: str | None = None
    models: list[ModelSpec] | None = None
    slices: list[SliceSpec] | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    dtype: str | None = None
    out_dtype: str | None = None
    tokenizer_source: str | None = None
    random_seed: int = 0

    @property
    def method(self) -> MergeMethod | None:
        return get_method(self.merge_method)

    def model_names(self) -> list[str]:
        """Every model the recipe names (base first), in order of first use."""
        names = [self.base_model] if self.base_model else []
        names += [m.model for m in self.models or []]
        names += [s.model for sl in self.slices or [] for s in sl.sources]
        return list(dict.fromkeys(names))

    def validate(self) -> list[str]:
        return validate_recipe(self)


def load_merge_recipe(path: str) -> MergeRecipe:
    """Read and check a YAML recipe (every problem at once, as one ``ConfigError``)."""
    return recipe_from_dict(load_yaml(path), source=str(path))


def recipe_from_dict(data: Any, source: str | None = None) -> MergeRecipe:
    """Plain data → ``MergeRecipe``; refused and unknown keys and bad values reported together."""
    problems: list[str] = []
    if isinstance(data, dict):
        data = dict(data)
        for key, why in REFUSED_TOP.items():
            if key in data:
                problems.append(f"{key}: {why}")
                data.pop(key)
    try:
        recipe = from_dict(MergeRecipe, data)
    except ConfigError as exc:
        raise ConfigError(problems + exc.problems, source=source) from None
    if problems:
        raise ConfigError(problems, source=source)
    return recipe


# -- validation -------------------------------------------------------------------------------------


def validate_recipe(r: MergeRecipe) -> list[str]:
    """Every problem that can be seen without opening a model."""
    problems: list[str] = []
    names = [*method_names(), "passthrough"]
    if r.merge_method not in names:
        close = difflib.get_close_matches(r.merge_method, names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        problems.append(
            f"merge_method: unknown method {r.merge_method!r}{hint} (expected one of {', '.join(names)})"
        )
    if (r.models is None) == (r.slices is None):
        problems.append(
            "expected exactly one of models: or slices:, found " + ("both" if r.models else "neither")
        )
    for key in ("dtype", "out_dtype"):
        value = getattr(r, key)
        if value is not None and value not in DTYPES:
            problems.append(f"{key}: expected one of {', '.join(DTYPES)}, found {value!r}")
    for i, sl in enumerate(r.slices or []):
        problems += _slice_problems(i, sl)
    if r.tokenizer_source not in (None, "base", "union") and r.tokenizer_source not in r.model_names():
        problems.append(
            f"tokenizer_source: expected base, union or one of the models {r.model_names()}, "
            f"found {r.tokenizer_source!r}"
        )
    if r.merge_method == "passthrough":
        return problems + _passthrough_problems(r)
    method = r.method
    if method is None or problems and r.models is None and r.slices is None:
        return problems
    return problems + _method_problems(r, method)


def _slice_problems(i: int, sl: SliceSpec) -> list[str]:
    problems = []
    if not sl.sources:
        problems.append(f"slices[{i}].sources: expected at least one source, found none")
    lengths = set()
    for j, s in enumerate(sl.sources):
        rng = s.layer_range
        if len(rng) != 2 or rng[0] < 0 or rng[1] <= rng[0]:
            problems.append(
                f"slices[{i}].sources[{j}].layer_range: expected [start, end) with 0 <= start < end, found {rng}"
            )
        else:
            lengths.add(rng[1] - rng[0])
    if len(lengths) > 1:
        problems.append(f"slices[{i}]: every source needs the same number of layers, found {sorted(lengths)}")
    return problems


def _passthrough_problems(r: MergeRecipe) -> list[str]:
    problems = []
    if r.slices is None:
        problems.append("passthrough: expected slices: (one source each), found models:")
    for i, sl in enumerate(r.slices or []):
        if len(sl.sources) != 1:
            problems.append(
                f"slices[{i}].sources: passthrough takes one source per slice, found {len(sl.sources)}"
            )
        for where, params in [(f"slices[{i}]", sl.parameters)] + [
            (f"slices[{i}].sources[{j}]", s.parameters) for j, s in enumerate(sl.sources)
        ]:
            problems += [f"{where}.parameters.{k}: passthrough takes no parameters" for k in params]
    problems += [f"parameters.{k}: passthrough takes no parameters" for k in r.parameters]
    return problems


def merge_groups(r: MergeRecipe) -> list[list[tuple[str, dict[str, Any], str]]]:
    """Per slice (one for ``models:``), the merged inputs ``(model, parameters, where)``, base excluded
    when the method uses it as the base."""
    method = r.method
    drop_base = method is not None and method.base != "unused" and r.base_model is not None
    groups = []
    if r.models is not None:
        groups.append([(m.model, m.parameters, f"models[{i}]") for i, m in enumerate(r.models)])
    for i, sl in enumerate(r.slices or []):
        groups.append(
            [
                (s.model, {**sl.parameters, **s.parameters}, f"slices[{i}].sources[{j}]")
                for j, s in enumerate(sl.sources)
            ]
        )
    if drop_base:
        groups = [[g for g in group if g[0] != r.base_model] for group in groups]
    return groups


def _method_problems(r: MergeRecipe, method: MergeMethod) -> list[str]:
    problems = _param_problems("parameters", r.parameters, method.all_params)
    if method.base == "required" and r.base_model is None:
        problems.append(f"base_model: {method.name} needs a base model (task vectors are θ_i − θ_base)")
    if r.base_model is not None and method.base != "unused":
        for i, m in enumerate(r.models or []):
            if m.model == r.base_model and m.parameters:
                problems.append(
                    f"models[{i}].parameters: the base model's parameters are not used by {method.name}; "
                    f"remove {sorted(m.parameters)}"
                )
    for group in merge_groups(r):
        n = len(group)
        if n < method.min_models or method.max_models is not None and n > method.max_models:
            most = "" if method.max_models is None else f" and at most {method.max_models}"
            problems.append(
                f"{method.name} merges at least {method.min_models}{most} model(s) besides the base, found {n}: "
                f"{[g[0] for g in group]}"
            )
        for _model, params, where in group:
            problems += _param_problems(f"{where}.parameters", params, method.model_params)
            for key, p in method.model_params.items():
                if p.default is REQUIRED and key not in params and key not in r.parameters:
                    problems.append(f"{where}.parameters.{key}: required by {method.name}, not given")
    for key, p in method.global_params.items():
        if p.default is REQUIRED and key not in r.parameters:
            problems.append(f"parameters.{key}: required by {method.name}, not given")
    return problems


def _param_problems(where: str, params: dict[str, Any], allowed: dict) -> list[str]:
    problems = []
    for key, value in params.items():
        if key in REFUSED_PARAMS:
            problems.append(f"{where}.{key}: {REFUSED_PARAMS[key]}")
        elif key not in allowed:
            close = difflib.get_close_matches(str(key), list(allowed), n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"allowed: {', '.join(allowed) or 'none'}"
            problems.append(f"{where}.{key}: unknown parameter for this method; {hint}")
        else:
            problems += [f"{where}.{key}{p}" for p in _value_problems(value, allowed[key])]
    return problems


def _value_problems(value: Any, param) -> list[str]:
    """Problems of a scalar, a gradient (list of numbers) or a filter list, as ``': message'`` suffixes."""
    if isinstance(value, list):
        if value and all(isinstance(v, dict) for v in value):
            out = []
            for i, entry in enumerate(value):
                extra = sorted(set(entry) - {"filter", "value"})
                if extra or "value" not in entry:
                    out.append(f"[{i}]: expected {{filter: TEXT, value: V}} or {{value: V}}, found {entry!r}")
                else:
                    out += [f"[{i}].value{p}" for p in _value_problems(entry["value"], param)]
            return out
        if not value:
            return [": expected a number or a gradient (a non-empty list of numbers), found []"]
        if param.kind != "number":
            return [f": a gradient needs a numeric parameter, found {value!r}"]
        return [f"[{i}]: {msg}" for i, v in enumerate(value) if (msg := param.problem(v))]
    msg = param.problem(value)
    return [f": {msg}"] if msg else []


# -- resolution -------------------------------------------------------------------------------------


def value_at(value: Any, tensor: str, position: float) -> Any:
    """One parameter value for tensor ``tensor`` at relative depth ``position`` ∈ [0, 1].

    A filter list picks the first entry whose ``filter`` occurs in the tensor name (an entry without
    ``filter`` matches everything); a gradient of k values is interpolated linearly, so layer i of n
    gets position i / (n − 1). Returns ``None`` when no filter matches.
    """
    if isinstance(value, list) and value and isinstance(value[0], dict):
        for entry in value:
            if "filter" not in entry or str(entry["filter"]) in tensor:
                return value_at(entry["value"], tensor, position)
        return None
    if isinstance(value, list):
        if len(value) == 1:
            return float(value[0])
        x = min(max(position, 0.0), 1.0) * (len(value) - 1)
        i = min(int(x), len(value) - 2)
        frac = x - i
        return float(value[i]) * (1 - frac) + float(value[i + 1]) * frac
    return value


def resolve_params(
    layers: list[dict[str, Any]], spec: dict, tensor: str, position: float
) -> tuple[dict[str, Any], list[str]]:
    """Merge parameter mappings (later ones win), resolve each declared parameter for one tensor.

    Returns ``(values, missing)``: the resolved ``{name: value}`` (defaults filled) and the names
    that no filter matched and that have no default.
    """
    values, missing = {}, []
    for name, param in spec.items():
        raw = next((m[name] for m in reversed(layers) if name in m), REQUIRED)
        value = REQUIRED if raw is REQUIRED else value_at(raw, tensor, position)
        if value is None or value is REQUIRED:
            value = param.default
        if value is REQUIRED:
            missing.append(name)
        values[name] = value
    return values, missing
