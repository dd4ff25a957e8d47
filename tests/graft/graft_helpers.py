"""Helpers for the graft tests: tiny models from a config, hollow (sparse) 7B-shaped checkpoints."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from lmfuse.core.export import ExportTensor, safetensors_header
from lmfuse.testing import char_tokenizer


def save_config_model(directory: Path, config, seed: int = 0) -> Path:
    """Save a random model of ``config`` (tiny) with the char tokenizer."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    for p in model.parameters():
        if p.dim() > 1:
            torch.nn.init.normal_(p, std=0.2)
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
