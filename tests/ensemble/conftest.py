"""Tiny models shared by the ensemble tests (built once per session, milliseconds per forward)."""

from __future__ import annotations

import pytest

from lmfuse.testing import bpe_tokenizer, char_tokenizer, tiny_model

PROMPTS = ["Q: 12+7= A:", "hi", "the quick brown fox jumps", "Q: 6*8="]
"""Different lengths, so batches are left-padded."""


@pytest.fixture(scope="session")
def tok():
    return char_tokenizer()


@pytest.fixture(scope="session")
def bpe():
    return bpe_tokenizer(vocab_size=300)


@pytest.fixture(scope="session")
def models(tok):
    """Three members of different architectures sharing the char tokenizer."""
    return {
        arch: tiny_model(arch, vocab_size=len(tok), seed=seed)
        for seed, arch in enumerate(("llama", "mistral", "qwen2"), start=1)
    }


@pytest.fixture()
def batch(tok):
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    return enc["input_ids"], enc["attention_mask"]
