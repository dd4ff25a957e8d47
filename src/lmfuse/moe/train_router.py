"""``train_router``: train only the routers of an MoE model on text, everything else frozen.

The loss is the model's next-token loss on the examples, so each router learns to send tokens to the
expert that predicts them best — what ``hidden`` initialisation only approximates.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch

from lmfuse.moe.data import Example
from lmfuse.moe.hf import router_parameters


@dataclass
class TrainRouterConfig:
    steps: int = 30
    """Optimiser steps."""
    lr: float = 0.05
    batch_size: int = 16
    seed: int = 0
    append_eos: bool = True
    """Append the tokenizer's EOS to every text (the model also learns where answers stop)."""


@dataclass
class TrainRouterResult:
    losses: list[float] = field(default_factory=list)
    """Loss per step."""
    trained_params: int = 0
    frozen_params: int = 0


def train_router(
    model,
    tokenizer,
    examples: list[Example | str],
    cfg: TrainRouterConfig | None = None,
    progress: bool = False,
) -> TrainRouterResult:
    """Train ``model``'s routers in place on ``examples``; returns the loss curve. ``model`` ends in eval mode.

    An example with a ``prompt`` is learned on its completion only (how instruction models are tuned).
    """
    from tqdm.auto import tqdm

    cfg = cfg or TrainRouterConfig()
    examples = [e if isinstance(e, Example) else Example(e) for e in examples]
    if not examples:
        raise ValueError("train_router needs at least one example")
    routers = router_parameters(model)
    ids = {id(p) for p in routers}
    for p in model.parameters():
        p.requires_grad_(id(p) in ids)
    result = TrainRouterResult(
        trained_params=sum(p.numel() for p in routers),
        frozen_params=sum(p.numel() for p in model.parameters() if id(p) not in ids),
    )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    suffix = tokenizer.eos_token if cfg.append_eos and tokenizer.eos_token else ""
    rng = random.Random(cfg.seed)
    optimiser = torch.optim.AdamW(routers, lr=cfg.lr, weight_decay=0.0)
    side, tokenizer.padding_side = tokenizer.padding_side, "right"  # positions as in pre-training
    model.train()
    try:
        for _ in tqdm(range(cfg.steps), desc="train-router", disable=not progress):
            batch, labels = _batch(tokenizer, rng.choices(examples, k=cfg.batch_size), suffix)
            loss = model(**batch, labels=labels).loss
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            result.losses.append(loss.item())
    finally:
        tokenizer.padding_side = side
        model.eval()
        for p in model.parameters():
            p.requires_grad_(True)
    return result


def _batch(tokenizer, examples: list[Example], suffix: str):
    """Right-padded batch and labels: padding and prompt tokens are ``-100`` (not learned)."""
    batch = tokenizer([e.text + suffix for e in examples], return_tensors="pt", padding=True)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    for row, e in enumerate(examples):
        if e.prompt is not None:
            labels[row, : len(tokenizer(e.prompt)["input_ids"])] = -100
    return batch, labels
