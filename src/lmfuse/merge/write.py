"""Write a merge: plan (all checks), then compute and stream one output tensor at a time through
``core/export.py`` into an atomic output directory.

For each output tensor only its inputs (one per model, plus the base) are read, cast to the working
dtype on the chosen device, merged and written; peak memory is therefore about (models + 2) × the
largest tensor in the working dtype, whatever the model size. The output directory gets the weights,
``config.json``, the tokenizer of ``tokenizer_source``, ``merge_plan.json`` (inputs and resolved
parameters of every tensor), the recipe as given (``lmfuse_recipe.yaml``, mergekit format),
provenance and a model card. ``passthrough`` recipes are handed to ``lmfuse.graft``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from lmfuse.core.checkpoint import CheckpointReader
from lmfuse.core.config import dump_yaml
from lmfuse.core.export import ExportTensor, export_checkpoint, provenance, raw_bytes
from lmfuse.errors import CheckpointError, ConfigError
from lmfuse.merge.methods import Owned, TensorRng
from lmfuse.merge.plan import MergeJob, MergePlan, plan_merge
from lmfuse.merge.recipe import MergeRecipe
from lmfuse.merge.union import gather_rows, union_tokenizer_files

PLAN_FILE = "merge_plan.json"


@dataclass
class MergeResult:
    """What ``merge`` wrote."""

    out: Path
    plan: MergePlan | None
    """``None`` for passthrough (see the graft plan in ``graft_plan.json``)."""


def check_device(device: str | torch.device | None) -> torch.device:
    """``None`` → CPU; a CUDA device only if one is there (else a ``ConfigError`` saying so)."""
    if device is None:
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"--device: expected cpu, cuda or cuda:N, found {device!r}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) present")
    elif dev.type != "cpu":
        raise ConfigError(f"--device: expected cpu or cuda[:N], found {device!r}")
    return dev


def read_tensor(reader: CheckpointReader, name: str) -> torch.Tensor:
    """One tensor read with plain file reads into memory we own (the caller may overwrite it).

    Not through a memory map: pages of a mapped file count in the process's resident memory once
    touched, so reading every tensor of three 2 GB models would show 6 GB of RSS for a merge that
    holds a few hundred MB. ``.bin`` checkpoints fall back to the reader.
    """
    located = raw_bytes(reader, name)
    if located is None:  # the reader may keep (and map) what it returns: copy it, it is ours to overwrite
        return reader.get(name).clone()
    raw, shape, dtype = located
    buf = torch.empty(raw.nbytes, dtype=torch.uint8)
    view, done = memoryview(buf.numpy()), 0
    with open(raw.path, "rb", buffering=0) as fh:
        fh.seek(raw.offset)
        while done < raw.nbytes:
            n = fh.readinto(view[done:])
            if not n:
                raise CheckpointError(
                    f"{raw.path} ends before byte {raw.offset + raw.nbytes}; is it truncated?"
                )
            done += n
    return buf.view(dtype).reshape(shape)


def compute(plan: MergePlan, job: MergeJob, device: torch.device) -> torch.Tensor:
    """Merge one output tensor (returned in its output dtype, on ``device``)."""

    def read(ref: tuple[str, str]) -> torch.Tensor:
        model, tensor = ref
        return read_tensor(plan.sources[model].reader, tensor).to(device=device, dtype=plan.work_dtype)

    inputs = [read(r) for r in job.inputs]
    base = read(job.base) if job.base is not None else None
    if job.rows is not None:  # tokenizer_source: union — every input re-indexed to the union vocabulary
        both = gather_rows(
            ([base] if base is not None else []) + inputs, job.rows, 0 if base is not None else None
        )
        base, inputs = (both[0], both[1:]) if base is not None else (None, both)
    rng = TensorRng(plan.recipe.random_seed, job.name)
    reload = (lambda: read(job.base)) if job.base is not None and job.rows is None else None
    owned = Owned(inputs, reload)  # read for this call alone: the method may overwrite and drop them
    del inputs
    with torch.no_grad():
        out = plan.method.fn(owned, base, job.per_model, job.params, rng)
    del owned, base
    return out.to(job.dtype)


def export_tensors(plan: MergePlan, device: torch.device) -> list[ExportTensor]:
    """The plan as ``ExportTensor``s whose ``load`` merges on demand (nothing computed yet)."""
    return [ExportTensor(j.name, j.shape, j.dtype, _loader(plan, j, device)) for j in plan.jobs]


def _loader(plan: MergePlan, job: MergeJob, device: torch.device):
    return lambda: compute(plan, job, device)


def merged_state_dict(
    plan: MergePlan, device: str | torch.device | None = None
) -> Iterator[tuple[str, torch.Tensor]]:
    """``(name, tensor)`` of every output tensor, computed one at a time (for in-memory merges)."""
    dev = check_device(device)
    for job in plan.jobs:
        yield job.name, compute(plan, job, dev)


def merge(
    recipe: MergeRecipe,
    out: str | Path,
    *,
    device: str | torch.device | None = None,
    overwrite: bool = False,
    max_shard_bytes: int = 2 * 1024**3,
    progress: bool = False,
) -> MergeResult:
    """Check ``recipe`` completely, then write the merged model to ``out``; returns what was written.

    Raises ``ConfigError`` (every problem at once) before anything is written; ``out`` appears only
    once complete.
    """
    if recipe.merge_method == "passthrough":
        from lmfuse.graft.write import graft
        from lmfuse.merge.passthrough import to_graft_recipe

        graft(
            to_graft_recipe(recipe),
            out,
            overwrite=overwrite,
            max_shard_bytes=max_shard_bytes,
            progress=progress,
        )
        return MergeResult(Path(out), None)
    dev = check_device(device)
    plan = plan_merge(recipe, out=out, overwrite=overwrite)
    record = provenance(
        {name: str(src.directory) for name, src in plan.sources.items()},
        method=f"merge:{plan.method.name}",
        device=str(dev),
        work_dtype=str(plan.work_dtype).removeprefix("torch."),
        random_seed=recipe.random_seed,
    )
    export_checkpoint(
        out,
        export_tensors(plan, dev),
        plan.config,
        recipe_yaml=dump_yaml(recipe),
        provenance_record=record,
        side_files_from=plan.sources[plan.tokenizer_model].directory,
        extra_files={
            PLAN_FILE: json.dumps(plan.to_json(), indent=1) + "\n",
            "README.md": model_card(plan),
            **(
                union_tokenizer_files(plan.sources[plan.tokenizer_model].directory, plan.union)
                if plan.union
                else {}
            ),
        },
        overwrite=overwrite,
        max_shard_bytes=max_shard_bytes,
        progress=progress,
    )
    return MergeResult(Path(out), plan)


def model_card(plan: MergePlan) -> str:
    """A short README for the output: the method, the models and where to find the details."""
    r = plan.recipe
    lines = [
        f"# Merged model (lmfuse merge, {plan.method.name})",
        "",
        f"{plan.config.get('model_type')} model with {plan.num_layers} decoder layers, merged with "
        f"`{plan.method.name}` in {str(plan.work_dtype).removeprefix('torch.')}.",
        "",
    ]
    if r.base_model:
        lines.append(f"Base model: `{r.base_model}`.")
    lines += ["", "| model | path |", "|---|---|"]
    lines += [f"| `{name}` | `{src.directory}` |" for name, src in plan.sources.items()]
    lines += [
        "",
        f"Recipe (mergekit format): `lmfuse_recipe.yaml`; per-tensor inputs and parameters: `{PLAN_FILE}`.",
        "",
    ]
    return "\n".join(lines)
