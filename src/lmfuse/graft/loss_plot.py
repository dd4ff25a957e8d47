"""A picture of training loss curves (``lmfuse train``'s logged ``(step, loss)`` pairs), one line each."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path


def plot_losses(curves: Mapping[str, Sequence[tuple[int, float]]], path: str | Path, title: str = "") -> Path:
    """Save ``label → [(step, loss), ...]`` as one picture (log-scale loss), written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lmfuse.core.atomic import check_image_path, save_figure

    check_image_path(path)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for k, (label, points) in enumerate(curves.items()):
        steps, losses = zip(*points, strict=True) if points else ((), ())
        ax.plot(steps, losses, "-", color=f"C{k}", label=label)
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("training loss")
    ax.set_title(title or "training loss")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        return save_figure(fig, path, dpi=100)
    finally:
        plt.close(fig)
