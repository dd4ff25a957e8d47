"""``build_moe``: a base model plus N dense fine-tunes of it → a native transformers MoE checkpoint.

Order of work: resolve and validate every input (configs, architectures, tensor names and shapes, output
directory) before anything is written; compute the router rows (``hidden`` runs the base on the
prompts); then stream the output with ``core.export`` — attention, norms and embeddings from the base
(or averaged over the experts), each expert's MLP as one routed expert, one tensor in memory at a time,
into a temporary directory renamed into place only when complete.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from lmfuse.core.atomic import check_output_dir
from lmfuse.core.checkpoint import CheckpointReader
from lmfuse.core.config import dump_yaml
from lmfuse.core.export import ExportTensor, export_checkpoint, from_source, provenance
from lmfuse.core.loading import resolve_dtype, resolve_model_path
from lmfuse.core.tokenizers import tokenizer_difference
from lmfuse.errors import ConfigError, IncompatibleModelsError, LmfuseError, ModelNotFoundError
from lmfuse.moe import convert
from lmfuse.moe.params import moe_param_counts
from lmfuse.moe.recipe import MOE_OF_DENSE, BuildRecipe


@dataclass
class BuildResult:
    out: Path
    architecture: str
    num_experts: int
    num_experts_per_tok: int
    total_params: int
    active_params: int
    seconds: float


@dataclass
class _Sources:
    arch: str
    base_dir: str
    base_config: object
    base: CheckpointReader
    experts: list[CheckpointReader]
    shared: CheckpointReader | None
    dtype: torch.dtype


def _open(source: str, what: str, problems: list[str]):
    from transformers import AutoConfig

    path = resolve_model_path(source)
    if not (Path(path) / "config.json").is_file():
        problems.append(f"{what}: no model directory with config.json at {source!r} (a path or zoo:NAME)")
        return None, None
    try:
        return AutoConfig.from_pretrained(path), CheckpointReader(path)
    except (OSError, ValueError, ModelNotFoundError) as exc:
        problems.append(f"{what}: cannot read {source!r}: {exc}")
        return None, None


def missing_sources(data: object) -> list[str]:
    """For a recipe that failed to load: the models it names that cannot be found (plain YAML data)."""
    if not isinstance(data, dict):
        return []
    named = [("base", data.get("base"))]
    experts = data.get("experts") if isinstance(data.get("experts"), list) else []
    named += [(f"experts[{i}]", e.get("source")) for i, e in enumerate(experts) if isinstance(e, dict)]
    problems: list[str] = []
    for what, source in named:
        if isinstance(source, str):
            try:
                found = (Path(resolve_model_path(source)) / "config.json").is_file()
            except LmfuseError:
                found = False
            if not found:
                problems.append(
                    f"{what}: no model directory with config.json at {source!r} (a path or zoo:NAME)"
                )
    return problems


def _same_tensors(base: CheckpointReader, other: CheckpointReader, what: str) -> list[str]:
    missing = sorted(set(base.keys()) - set(other.keys()))
    extra = sorted(set(other.keys()) - set(base.keys()))
    problems = [f"{what}: tensors missing compared with the base: {missing[:3]}"] if missing else []
    problems += [f"{what}: tensors the base does not have: {extra[:3]}"] if extra else []
    names = base.keys()
    for name in names:
        if name in other and base.meta(name)[0] != other.meta(name)[0]:
            problems.append(
                f"{what}: {name} has shape {other.meta(name)[0]}, the base has {base.meta(name)[0]}"
            )
            break
    return problems


def _tokenizer_problems(recipe: BuildRecipe) -> list[str]:
    """Experts must tokenize exactly as the base does: the MoE keeps the base's embeddings and tokenizer."""
    sources = [(f"experts[{i}]", e.source) for i, e in enumerate(recipe.experts)]
    sources += [("shared_expert", recipe.shared_expert.source)] if recipe.shared_expert is not None else []
    base = resolve_model_path(recipe.base)
    problems = []
    for what, source in sources:
        diff = tokenizer_difference(base, resolve_model_path(source), recipe.base, source)
        if diff:
            problems.append(
                f"{what}: its tokenizer differs from the base's ({diff}); experts must share the base's tokenizer"
            )
    return problems


def resolve_sources(recipe: BuildRecipe) -> _Sources:
    """Open and validate every input; raise one error listing every problem found."""
    problems = recipe.validate()
    if problems:
        raise ConfigError(problems)
    base_cfg, base = _open(recipe.base, "base", problems)
    opened = [_open(e.source, f"experts[{i}]", problems) for i, e in enumerate(recipe.experts)]
    shared_cfg, shared = (None, None)
    if recipe.shared_expert is not None:
        shared_cfg, shared = _open(recipe.shared_expert.source, "shared_expert", problems)
    if problems:
        raise IncompatibleModelsError("cannot build the MoE:\n  - " + "\n  - ".join(problems))
    dense_type = base_cfg.model_type
    arch = MOE_OF_DENSE.get(dense_type)
    if arch is None:
        problems.append(f"base is a {dense_type!r} model; supported: {', '.join(MOE_OF_DENSE)}")
    elif recipe.architecture not in ("auto", arch):
        problems.append(
            f"architecture {recipe.architecture!r} cannot be built from {dense_type!r} experts (use {arch!r})"
        )
    if arch is not None and arch != "qwen2_moe" and recipe.shared_expert is not None:
        problems.append(f"shared_expert: {arch} has no shared expert (only qwen2_moe does)")
    others = [(f"experts[{i}]", c, r) for i, (c, r) in enumerate(opened)]
    others += [("shared_expert", shared_cfg, shared)] if shared is not None else []
    for what, cfg, reader in others:
        if cfg.model_type != dense_type:
            problems.append(
                f"{what}: a {cfg.model_type!r} model, the base is {dense_type!r}; experts must be fine-tunes of the base"
            )
        else:
            problems += _same_tensors(base, reader, what)
    problems += _tokenizer_problems(recipe)
    problems += convert.compatibility_problems(arch, base_cfg) if arch else []
    if problems:
        raise IncompatibleModelsError("cannot build the MoE:\n  - " + "\n  - ".join(problems))
    first = base.keys()[0]
    dtype = base.meta(first)[1] if recipe.dtype == "auto" else resolve_dtype(recipe.dtype)
    return _Sources(
        arch, resolve_model_path(recipe.base), base_cfg, base, [r for _, r in opened], shared, dtype
    )


def router_rows(recipe: BuildRecipe, src: _Sources) -> torch.Tensor:
    """``(num_layers, E, M)`` fp32 router weights as ``recipe.router_init`` asks."""
    from lmfuse.core.loading import load_model, load_tokenizer
    from lmfuse.moe import router_init

    cfg = src.base_config
    pos = [e.positive_prompts for e in recipe.experts]
    neg = [e.negative_prompts for e in recipe.experts]
    if recipe.router_init == "random":
        return router_init.random_rows(
            cfg.num_hidden_layers, len(recipe.experts), cfg.hidden_size, cfg.initializer_range, recipe.seed
        )
    tokenizer = load_tokenizer(src.base_dir)
    if recipe.router_init == "embed":
        emb = src.base.get("model.embed_tokens.weight")
        return router_init.embed_rows(emb, tokenizer, pos, neg, cfg.num_hidden_layers, recipe.router_scale)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    # stored dtype: no fp32 copy of a large base (the hooks read the hidden states in fp32)
    model = load_model(src.base_dir, dtype="auto")
    try:
        return router_init.hidden_rows(model, tokenizer, pos, neg, recipe.router_scale)
    finally:
        del model


def prompt_router_files(
    recipe: BuildRecipe, src: _Sources, num_experts_per_tok: int
) -> dict[str, bytes | str]:
    """``routing: prompt``: the prompt router's files, initialised as ``recipe.router_init`` asks."""
    from lmfuse.core.loading import load_model, load_tokenizer
    from lmfuse.moe import router_init
    from lmfuse.moe.prompt import PromptRoutedMoE

    cfg, n = src.base_config, len(recipe.experts)
    width = 2 * cfg.hidden_size
    if recipe.router_init == "random":
        weight = router_init.random_rows(1, n, width, cfg.initializer_range, recipe.seed)[0]
    else:  # hidden and embed: the features are the first layer's MLP inputs either way
        tokenizer = load_tokenizer(src.base_dir)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        model = load_model(src.base_dir, dtype="auto")
        if recipe.shared_weights == "average":  # the features see the MoE's shared weights
            names = src.base.keys()  # a reader, not a dict
            shared = [k for k in names if not convert.is_dense_mlp(k)]
            model.load_state_dict({k: _averaged(src.experts, k, src.dtype)() for k in shared}, strict=False)
        pos = [e.positive_prompts for e in recipe.experts]
        neg = [e.negative_prompts for e in recipe.experts]
        weight = router_init.prompt_rows(model, tokenizer, pos, neg, recipe.router_scale)
        del model
    return PromptRoutedMoE.files_for(weight, num_experts_per_tok)


def _plan(recipe: BuildRecipe, src: _Sources, rows: torch.Tensor) -> list[ExportTensor]:
    arch, dtype, cfg = src.arch, src.dtype, src.base_config
    plan = []
    names = src.base.keys()
    for name in names:
        if convert.is_dense_mlp(name):
            continue
        if recipe.shared_weights == "average":
            shape = tuple(src.base.meta(name)[0])
            plan.append(ExportTensor(name, shape, dtype, _averaged(src.experts, name, dtype)))
        else:
            plan.append(from_source(src.base, name, name, dtype))
    m = cfg.hidden_size
    for layer in range(cfg.num_hidden_layers):
        row = rows[layer]
        plan.append(
            ExportTensor(convert.router_name(arch, layer), tuple(row.shape), dtype, lambda r=row: r.to(dtype))
        )
        for e, reader in enumerate(src.experts):
            for proj in convert.DENSE_MLP:
                dense = convert.dense_mlp_name(layer, proj)
                plan.append(from_source(reader, dense, convert.expert_name(arch, layer, e, proj), dtype))
        if arch == "qwen2_moe":
            plan += _shared_expert(src, layer, m, dtype)
    return plan


def _averaged(readers: list[CheckpointReader], name: str, dtype: torch.dtype):
    def load() -> torch.Tensor:
        total = sum(r.get(name).double() for r in readers)
        return (total / len(readers)).to(dtype)

    return load


def _shared_expert(src: _Sources, layer: int, m: int, dtype: torch.dtype) -> list[ExportTensor]:
    """Qwen2-MoE's shared expert (the MLP of ``shared_expert.source``, or width 0) and its gate: zeros, so
    ``sigmoid(0) = ½`` scales the shared MLP on every token until the gate is trained (as the README says)."""
    out = [
        ExportTensor(
            f"model.layers.{layer}.mlp.shared_expert_gate.weight",
            (1, m),
            dtype,
            lambda: torch.zeros(1, m, dtype=dtype),
        )
    ]
    for proj in convert.DENSE_MLP:
        target = convert.shared_names(layer, proj)
        if src.shared is not None:
            out.append(from_source(src.shared, convert.dense_mlp_name(layer, proj), target, dtype))
        else:
            shape = (m, 0) if proj == "down_proj" else (0, m)
            out.append(ExportTensor(target, shape, dtype, lambda s=shape: torch.zeros(s, dtype=dtype)))
    return out


def build_moe(
    recipe: BuildRecipe, out: str | Path, overwrite: bool = False, progress: bool = False
) -> BuildResult:
    """Build the MoE of ``recipe`` at ``out`` (atomically); returns what was built and its sizes."""
    start = time.perf_counter()
    check_output_dir(out, overwrite)
    src = resolve_sources(recipe)
    n, k = len(recipe.experts), recipe.num_experts_per_tok
    shared_width = src.base_config.intermediate_size if src.shared is not None else 0
    config = convert.moe_config(src.arch, src.base_config, n, k, shared_width)
    config.dtype = src.dtype
    counts = moe_param_counts(config)
    rows = router_rows(recipe, src)
    plan = _plan(recipe, src, rows)
    inputs = {"base": recipe.base, **{f"expert_{i}": e.source for i, e in enumerate(recipe.experts)}}
    record = provenance(
        inputs, "moe", architecture=src.arch, total_params=counts.total, active_params=counts.active
    )
    extra = prompt_router_files(recipe, src, k) if recipe.routing == "prompt" else None
    config_dict = config.to_dict()
    config_dict["dtype"] = str(src.dtype).removeprefix("torch.")
    export_checkpoint(
        out, plan, config_dict, recipe_yaml=dump_yaml(recipe), provenance_record=record,
        side_files_from=src.base_dir, extra_files=extra, overwrite=overwrite,
        max_shard_bytes=recipe.max_shard_bytes, progress=progress,
    )  # fmt: skip
    return BuildResult(Path(out), src.arch, n, k, counts.total, counts.active, time.perf_counter() - start)
