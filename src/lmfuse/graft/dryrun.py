"""``--dry-run``: show a graft plan as a table (and optionally a picture) without writing weights."""

from __future__ import annotations

from pathlib import Path

from lmfuse.graft.plan import GraftPlan


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.2f} {unit}"
        n /= 1024
    return f"{n} B"


def layer_runs(plan: GraftPlan) -> list[tuple[range, str, range]]:
    """Consecutive output layers that come from consecutive layers of one model."""
    runs: list[tuple[range, str, range]] = []
    for i, (model, j) in enumerate(plan.layer_map):
        if runs:
            out, m, src = runs[-1]
            if m == model and src.stop == j:
                runs[-1] = (range(out.start, i + 1), m, range(src.start, j + 1))
                continue
        runs.append((range(i, i + 1), model, range(j, j + 1)))
    return runs


def plan_table(plan: GraftPlan) -> str:
    """The layer map, embeddings/head origin, parameter count, output size and expected peak memory."""
    rows = [("output layers", "model", "source layers")]
    for out, model, src in layer_runs(plan):
        rows.append((f"{out.start}-{out.stop - 1}", model, f"{src.start}-{src.stop - 1}"))
    widths = [max(len(r[c]) for r in rows) for c in range(3)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines += [
        "",
        f"embeddings      {plan.recipe.embeddings_model}",
        f"final norm+head {plan.recipe.head_model}"
        + (" (tied to the embeddings)" if plan.config.get("tie_word_embeddings") else ""),
        f"layers          {len(plan.layer_map)} ({plan.config['model_type']})",
        f"parameters      {plan.num_parameters:,}",
        f"output size     {human_bytes(plan.output_bytes)} in {len(plan.tensors)} tensors",
        f"peak memory     ~{human_bytes(plan.peak_memory_bytes)} (runtime + the largest tensor that is cast)",
    ]
    return "\n".join(lines)


def plot_plan(plan: GraftPlan, path: str | Path) -> Path:
    """Save a picture: x = output layer, y = source layer, one colour per slice."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(max(4.0, len(plan.layer_map) * 0.15 + 2), 3.5))
    start = 0
    for k, s in enumerate(plan.recipe.slices):
        src = list(s.range)
        out = list(range(start, start + len(src)))
        ax.plot(out, src, "o-", ms=4, color=f"C{k}", label=f"{s.model} [{s.layers[0]}, {s.layers[1]})")
        start += len(src)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("output layer")
    ax.set_ylabel("source layer")
    ax.set_title(f"graft plan: {len(plan.layer_map)} layers, {plan.num_parameters:,} parameters")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    from lmfuse.core.atomic import save_figure

    try:
        return save_figure(fig, path, dpi=100)
    finally:
        plt.close(fig)
