"""Shared fixtures: tiny dense models saved to disk (and their fine-tuned-looking variants)."""

from pathlib import Path

import pytest
import torch

from lmfuse.testing import char_tokenizer, save_tiny


def save_dense(directory: Path, arch: str, seed: int = 0) -> Path:
    """A tiny dense ``arch`` model (llama, mistral, qwen2 or qwen3) with a char tokenizer."""
    return save_tiny(directory, arch, tokenizer=char_tokenizer(), seed=seed)


def save_finetune(base: Path, directory: Path, seed: int) -> Path:
    """A copy of ``base`` whose MLP weights are perturbed (a stand-in for a fine-tune of the base)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".mlp." in name:
                p.add_(torch.randn(p.shape, generator=gen) * 0.2)
    model.save_pretrained(directory)
    char_tokenizer().save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def llama_family(tmp_path_factory):
    """A llama base and three perturbed 'fine-tunes' of it."""
    root = tmp_path_factory.mktemp("llama_family")
    base = save_dense(root / "base", "llama")
    return base, [save_finetune(base, root / f"ft{i}", seed=i + 1) for i in range(3)]


@pytest.fixture
def make_dense():
    """``make_dense(directory, arch, seed=0)`` saves a tiny dense model (llama, mistral, qwen2, qwen3)."""
    return save_dense


@pytest.fixture
def make_finetune():
    """``make_finetune(base, directory, seed)`` saves a perturbed copy of ``base`` (see ``save_finetune``)."""
    return save_finetune
