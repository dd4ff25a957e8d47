"""Write a graft to disk: plan (all checks), then stream the tensors into an atomic output directory.

The output directory gets the weights (sharded safetensors), ``config.json`` with every per-layer
list remapped, the embeddings model's tokenizer and generation config, ``graft_plan.json`` (which
source layer and tensor each output one came from), the resolved recipe, provenance and a model card.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from lmfuse.core.config import dump_yaml
from lmfuse.core.export import export_checkpoint, provenance
from lmfuse.core.loading import has_tokenizer
from lmfuse.errors import ConfigError
from lmfuse.graft.plan import GraftPlan, plan_graft
from lmfuse.graft.recipe import GraftRecipe

PLAN_FILE = "graft_plan.json"


@dataclass
class GraftResult:
    """What ``graft`` wrote."""

    out: Path
    plan: GraftPlan


def graft(
    recipe: GraftRecipe,
    out: str | Path,
    overwrite: bool = False,
    max_shard_bytes: int = 2 * 1024**3,
    progress: bool = False,
) -> GraftResult:
    """Check ``recipe`` completely, then write the grafted model to ``out``; returns what was written.

    Raises ``ConfigError`` (every problem at once) before anything is written. Memory stays about one
    tensor (byte copies need none); ``out`` appears only once complete.
    """
    plan = plan_graft(recipe, out=out, overwrite=overwrite)
    side = plan.sources[recipe.embeddings_model].directory
    if not has_tokenizer(side):
        raise ConfigError(
            f"{recipe.embeddings_model!r} (the embeddings model) has no tokenizer files, so the output would "
            "have none; add its tokenizer files (tokenizer.json, ...) to it"
        )
    record = provenance(
        {name: str(src.directory) for name, src in plan.sources.items()},
        method="graft",
        num_parameters=plan.num_parameters,
        notes=recipe.extra,
    )
    export_checkpoint(
        out,
        plan.export_tensors(),
        plan.config,
        recipe_yaml=dump_yaml(recipe),
        provenance_record=record,
        side_files_from=side,
        extra_files={PLAN_FILE: json.dumps(plan.to_json(), indent=2) + "\n", "README.md": model_card(plan)},
        overwrite=overwrite,
        max_shard_bytes=max_shard_bytes,
        progress=progress,
    )
    return GraftResult(Path(out), plan)


def model_card(plan: GraftPlan) -> str:
    """A short README for the output: what it is made of and that it needs continued training."""
    lines = [
        "# Grafted model (lmfuse graft)",
        "",
        f"{plan.config['model_type']} model with {len(plan.layer_map)} decoder layers and "
        f"{plan.num_parameters:,} parameters, built by stacking layer slices:",
        "",
        "| output layers | model | source layers |",
        "|---|---|---|",
    ]
    start = 0
    for s in plan.recipe.slices:
        n = len(s.range)
        lines.append(f"| {start}–{start + n - 1} | `{s.model}` | {s.layers[0]}–{s.layers[1] - 1} |")
        start += n
    lines += [
        "",
        f"Input embeddings from `{plan.recipe.embeddings_model}`; final norm and lm_head from "
        f"`{plan.recipe.head_model}`. Layer-by-layer provenance: `{PLAN_FILE}`; recipe: `lmfuse_recipe.yaml`.",
        "",
        "A freshly grafted model usually needs continued pre-training before use (`lmfuse train`).",
        "",
    ]
    return "\n".join(lines)
