"""Shared fixtures for the graft tests: tiny saved models, models from a config, hollow checkpoints."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from lmfuse.core.export import ExportTensor, safetensors_header
from lmfuse.testing import char_tokenizer, model_from_config, save_tiny


@pytest.fixture(scope="session")
def tiny4(tmp_path_factory) -> Path:
    """A 4-layer tiny Llama with a char tokenizer."""
    return save_tiny(tmp_path_factory.mktemp("tiny4"), "llama", num_hidden_layers=4, seed=1)


@pytest.fixture(scope="session")
def tiny4b(tmp_path_factory) -> Path:
    """Another 4-layer tiny Llama (other weights, same tokenizer)."""
    return save_tiny(tmp_path_factory.mktemp("tiny4b"), "llama", num_hidden_layers=4, seed=2)


@pytest.fixture
def config_model():
    """``config_model(directory, config, seed=0)``: save a random model of ``config`` + char tokenizer."""
    return save_config_model


@pytest.fixture
def hollow():
    """``hollow(directory, config)``: a checkpoint of ``config``'s shapes whose data is a sparse hole."""
    return hollow_checkpoint


def save_config_model(directory: Path, config, seed: int = 0) -> Path:
    """Save a random model of ``config`` (tiny) with the char tokenizer."""
    model = model_from_config(config, seed=seed)
    model.save_pretrained(directory)
    char_tokenizer().save_pretrained(directory)
    return directory


def hollow_checkpoint(directory: Path, config) -> Path:
    """A checkpoint with ``config``'s exact tensor shapes whose data is a sparse hole (no disk used)."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    tensors = [
        ExportTensor(n, tuple(p.shape), torch.bfloat16, lambda: None) for n, p in model.state_dict().items()
    ]
    directory.mkdir(parents=True, exist_ok=True)
    header = safetensors_header(tensors)
    path = directory / "model.safetensors"
    with open(path, "wb") as fh:
        fh.write(header)
    os.truncate(path, len(header) + sum(t.nbytes for t in tensors))
    config.save_pretrained(directory)
    return directory
