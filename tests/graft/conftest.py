"""Shared fixtures for the graft tests: tiny saved models."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmfuse.testing import save_tiny


@pytest.fixture(scope="session")
def tiny4(tmp_path_factory) -> Path:
    """A 4-layer tiny Llama with a char tokenizer."""
    return save_tiny(tmp_path_factory.mktemp("tiny4"), "llama", num_hidden_layers=4, seed=1)


@pytest.fixture(scope="session")
def tiny4b(tmp_path_factory) -> Path:
    """Another 4-layer tiny Llama (other weights, same tokenizer)."""
    return save_tiny(tmp_path_factory.mktemp("tiny4b"), "llama", num_hidden_layers=4, seed=2)
