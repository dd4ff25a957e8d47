"""Fixtures for the merge tests: tiny saved fine-tunes of one tiny base, and a reader helper."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lmfuse.merge.recipe import recipe_from_dict
from lmfuse.testing import save_tiny


def finetune(base: Path, directory: Path, seed: int, scale: float = 0.02, only: str = "mlp") -> Path:
    """A copy of ``base`` whose ``only`` tensors got a random nudge (a fake fine-tune)."""
    shutil.copytree(base, directory)
    weights = load_file(directory / "model.safetensors")
    gen = torch.Generator().manual_seed(seed)
    for name, t in weights.items():
        if only in name:
            weights[name] = t + scale * torch.randn(t.shape, generator=gen, dtype=t.dtype)
    from safetensors.torch import save_file

    save_file(weights, directory / "model.safetensors", metadata={"format": "pt"})
    return directory


@pytest.fixture(scope="session")
def family(tmp_path_factory) -> dict[str, Path]:
    """``base`` (4-layer tiny Llama, float32), ``a``/``b``/``c`` MLP fine-tunes, ``base2`` a copy."""
    root = tmp_path_factory.mktemp("merge-family")
    base = save_tiny(root / "base", "llama", num_hidden_layers=4, seed=3)
    out = {"base": base, "base2": Path(shutil.copytree(base, root / "base2"))}
    for k, name in enumerate("abc"):
        out[name] = finetune(base, root / name, seed=10 + k)
    return out


def tensors(directory: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a (single-file or sharded) checkpoint directory."""
    out: dict[str, torch.Tensor] = {}
    for f in sorted(Path(directory).glob("*.safetensors")):
        out.update(load_file(f))
    return out


def recipe(**fields):
    """A ``MergeRecipe`` from keyword fields (paths become strings)."""

    def plain(v):
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, list):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return recipe_from_dict(plain(fields))
