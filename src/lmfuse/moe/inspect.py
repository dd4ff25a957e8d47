"""``inspect_routing``: per layer, the share of tokens each expert receives, and which expert wins for
each prompt category (the one receiving most of that category's tokens). A prompt-routed model
(``PromptRoutedMoE``) routes every token of an example as its prompt decides, the same in every layer."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from lmfuse.moe.data import Example
from lmfuse.moe.hf import moe_blocks


@dataclass
class InspectResult:
    shares: list[list[float]]
    """``[layer][expert]`` share of routed (token, choice) pairs."""
    category_shares: dict[str, list[list[float]]] = field(default_factory=dict)
    """category → ``[layer][expert]`` shares over that category's tokens."""
    tokens: int = 0

    def winners(self) -> dict[str, list[int]]:
        """category → per layer, the expert that receives most of its tokens."""
        return {
            c: [max(range(len(row)), key=row.__getitem__) for row in s]
            for c, s in self.category_shares.items()
        }


def _choices(output, k: int) -> torch.Tensor:
    """The router's ``(S, k)`` expert ids, from a v5 router ``(logits, scores, indices)`` or plain logits."""
    if isinstance(output, tuple):
        return output[-1]
    return output.topk(k, dim=-1).indices


@torch.no_grad()
def inspect_routing(model, tokenizer, examples: list[Example], batch_size: int = 32) -> InspectResult:
    """Run ``examples`` through ``model`` and count where each real (non-padding) token is routed."""
    from lmfuse.moe.prompt import PromptRoutedMoE, PromptRouting

    prompt_routed = isinstance(model, PromptRoutedMoE)
    if prompt_routed:
        prm, model = model, model.model
    blocks = moe_blocks(model)
    num_experts = (
        model.config.num_local_experts
        if hasattr(model.config, "num_local_experts")
        else model.config.num_experts
    )
    k = model.config.num_experts_per_tok
    total = torch.zeros(len(blocks), num_experts)
    per_cat: dict[str, torch.Tensor] = {}
    captured: list[torch.Tensor] = [None] * len(blocks)

    def hook(i):
        def fn(_module, _args, output):
            captured[i] = _choices(output, k)

        return fn

    handles = [] if prompt_routed else [b.gate.register_forward_hook(hook(i)) for i, b in enumerate(blocks)]
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    n_tokens = 0
    try:
        for start in range(0, len(examples), batch_size):
            chunk = examples[start : start + batch_size]
            batch = tokenizer([e.text for e in chunk], return_tensors="pt", padding=True)
            mask = batch["attention_mask"].bool()  # (B, T)
            if (
                prompt_routed
            ):  # the decision from each prompt (the whole text when there is none), every layer
                prompts = tokenizer([e.prompt or e.text for e in chunk], return_tensors="pt", padding=True)
                routing: PromptRouting = prm.route(prompts["input_ids"], prompts["attention_mask"])
                per_token = routing.indices[:, None, :].expand(*mask.shape, -1)  # (B, T, k)
                captured = [per_token] * len(blocks)
            else:
                model(**batch)
            n_tokens += int(mask.sum())
            for i, idx in enumerate(captured):
                idx = idx.view(*mask.shape, -1)  # (B, T, k)
                for b, example in enumerate(chunk):
                    counts = torch.bincount(idx[b][mask[b]].reshape(-1), minlength=num_experts).float()
                    total[i] += counts
                    if example.category is not None:
                        per_cat.setdefault(example.category, torch.zeros_like(total))[i] += counts
    finally:
        for h in handles:
            h.remove()

    def norm(t: torch.Tensor) -> list[list[float]]:
        return (t / t.sum(-1, keepdim=True).clamp_min(1)).tolist()

    return InspectResult(norm(total), {c: norm(t) for c, t in sorted(per_cat.items())}, n_tokens)


def plot_load(result: InspectResult, path: str | Path) -> Path:
    """A heat map of ``result.shares`` (layers × experts) saved to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shares = torch.tensor(result.shares).numpy()
    fig, ax = plt.subplots(figsize=(1 + 0.6 * shares.shape[1], 1 + 0.4 * shares.shape[0]))
    im = ax.imshow(shares, cmap="viridis", vmin=0, aspect="auto")
    ax.set_xlabel("expert")
    ax.set_ylabel("layer")
    ax.set_title("share of routed tokens")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    from lmfuse.core.atomic import save_figure

    try:
        return save_figure(fig, path)
    finally:
        plt.close(fig)
