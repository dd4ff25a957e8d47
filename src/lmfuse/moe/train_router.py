"""``train_router``: train only the routers of an MoE model on text, everything else frozen.

The loss is the model's next-token loss on the examples, so each router learns to send tokens to the
expert that predicts them best — what ``hidden`` initialisation only approximates.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch

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
    model, tokenizer, texts: list[str], cfg: TrainRouterConfig | None = None, progress: bool = False
) -> TrainRouterResult:
    """Train ``model``'s routers in place on ``texts``; returns the loss curve. ``model`` ends in eval mode."""
    from tqdm.auto import tqdm

    cfg = cfg or TrainRouterConfig()
    if not texts:
        raise ValueError("train_router needs at least one text")
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
            batch_texts = [t + suffix for t in rng.choices(texts, k=cfg.batch_size)]
            batch = tokenizer(batch_texts, return_tensors="pt", padding=True, add_special_tokens=True)
            labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
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
