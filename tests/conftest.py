"""Shared fixtures: tiny models saved to temporary directories; nothing touches the network."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory):
    """A tiny random Llama with the char-level tokenizer, saved once per session."""
    from lmfuse import testing

    return testing.save_tiny(tmp_path_factory.mktemp("tiny-llama"), "llama")
