"""``--dry-run`` and ``--plot``: the merge plan as a table, and its per-layer parameters as a picture."""

from __future__ import annotations

from pathlib import Path

from lmfuse.graft.dryrun import human_bytes
from lmfuse.merge.plan import MergePlan


def layer_values(plan: MergePlan) -> dict[str, list[float]]:
    """``"model: parameter"`` → per output layer, the mean resolved value over that layer's tensors
    (numeric per-model parameters, and numeric global ones as ``"parameter"``)."""
    sums: dict[str, list[float]] = {}
    counts = [0] * plan.num_layers
    names = [e for e in _merged_names(plan)]
    for job in plan.jobs:
        if job.layer is None:
            continue
        counts[job.layer] += 1
        entries = [(f"{names[i]}: {k}", v) for i, p in enumerate(job.per_model) for k, v in p.items()]
        entries += list(job.params.items())
        for key, v in entries:
            if isinstance(v, bool) or not isinstance(v, int | float):
                continue
            sums.setdefault(key, [0.0] * plan.num_layers)[job.layer] += float(v)
    return {k: [s / max(c, 1) for s, c in zip(v, counts, strict=True)] for k, v in sums.items()}


def _merged_names(plan: MergePlan) -> list[str]:
    first = next(j for j in plan.jobs)
    return [m for m, _ in first.inputs]


def plan_table(plan: MergePlan) -> str:
    """A human summary of what ``merge`` would write."""
    r = plan.recipe
    lines = [
        f"method          {plan.method.name}",
        f"base model      {r.base_model or '-'}",
        f"merged models   {', '.join(_merged_names(plan))}",
        f"layers          {plan.num_layers}",
        f"tensors         {len(plan.jobs)} ({human_bytes(plan.output_bytes)} written)",
        f"compute dtype   {str(plan.work_dtype).removeprefix('torch.')}",
        f"tokenizer from  {plan.tokenizer_model}",
        f"peak memory     ~{human_bytes(plan.peak_memory_bytes)} (runtime + inputs of the largest tensor)",
    ]
    values = layer_values(plan)
    varying = {k: v for k, v in values.items() if max(v) - min(v) > 1e-12}
    for key, v in values.items():
        if key not in varying:
            lines.append(f"{key:<15} {v[0]:g} (every layer)")
    for key, v in varying.items():
        lines.append(f"{key:<15} " + " ".join(f"{x:.3g}" for x in v) + " (by layer)")
    return "\n".join(lines)


def plot_plan(plan: MergePlan, path: str | Path) -> Path:
    """Save a picture: x = output layer, y = each numeric parameter (mean over the layer's tensors)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(max(4.0, plan.num_layers * 0.2 + 2), 3.5))
    for k, (key, v) in enumerate(layer_values(plan).items()):
        ax.plot(range(plan.num_layers), v, "o-", ms=3, color=f"C{k % 10}", label=key)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("output layer")
    ax.set_ylabel("parameter value")
    ax.set_title(f"merge plan: {plan.method.name}, {plan.num_layers} layers")
    ax.legend(loc="best", fontsize=7)
    fig.tight_layout()
    from lmfuse.core.atomic import save_figure

    try:
        return save_figure(fig, path, dpi=100)
    finally:
        plt.close(fig)
