"""Router initialisation for MoE checkpoints built from dense experts.

- ``hidden``: per layer, each expert's router row is the mean last-token MLP input (the hidden state the
  router will see) over its positive prompts minus the mean over its negative prompts — or, without negative
  prompts, minus the mean over the other experts' positive prompts — normalised to unit length.
- ``embed``: the same contrast over the base's mean token embeddings of the prompts (cheap: no forward).
- ``random``: normal with the model's ``initializer_range``, seeded.
Rows are multiplied by ``scale``. Every function returns ``(num_layers, num_experts, hidden)`` fp32.
"""

from __future__ import annotations

import torch


def _contrast(pos: torch.Tensor, neg: list[torch.Tensor | None]) -> torch.Tensor:
    """``pos`` ``(..., E, M)`` expert means; ``neg[e]`` ``(..., M)`` or None → unit-norm rows."""
    e = pos.shape[-2]
    rows = []
    for i in range(e):
        if neg[i] is not None:
            other = neg[i]
        else:
            other = torch.cat([pos[..., :i, :], pos[..., i + 1 :, :]], dim=-2).mean(-2)
        rows.append(pos[..., i, :] - other)
    rows = torch.stack(rows, dim=-2)
    return rows / rows.norm(dim=-1, keepdim=True).clamp_min(1e-12)


@torch.no_grad()
def mlp_inputs(model, tokenizer, prompts: list[str]) -> torch.Tensor:
    """Mean over prompts of each layer's MLP input at the prompt's last token: ``(num_layers, M)`` fp32.

    The last token is the one that has read the whole prompt (and where generation starts); a mean over all
    tokens would be dominated by the tokens every prompt shares.
    """
    layers = model.model.layers
    sums = [None] * len(layers)
    mask_holder: dict[str, torch.Tensor] = {}

    def hook(i):
        def fn(_module, args):
            h = args[0].float()  # (B, T, M)
            last = mask_holder["last"]  # (B,) position of each prompt's last real token
            per_prompt = h[torch.arange(h.shape[0]), last]  # (B, M)
            sums[i] = per_prompt.sum(0) if sums[i] is None else sums[i] + per_prompt.sum(0)

        return fn

    handles = [layer.mlp.register_forward_pre_hook(hook(i)) for i, layer in enumerate(layers)]
    try:
        batch = tokenizer(prompts, return_tensors="pt", padding=True)
        mask = batch["attention_mask"]
        mask_holder["last"] = (mask * torch.arange(mask.shape[1])).argmax(-1)
        model(**batch)
    finally:
        for h in handles:
            h.remove()
    return torch.stack(sums) / len(prompts)


def hidden_rows(
    model, tokenizer, positives: list[list[str]], negatives: list[list[str]], scale: float
) -> torch.Tensor:
    """``hidden`` init from the base ``model``: ``(num_layers, E, M)``."""
    pos = torch.stack([mlp_inputs(model, tokenizer, p) for p in positives], dim=1)  # (L, E, M)
    neg = [mlp_inputs(model, tokenizer, n) if n else None for n in negatives]
    return _contrast(pos, neg) * scale


def embed_rows(
    embeddings: torch.Tensor, tokenizer, positives: list[list[str]], negatives: list[list[str]],
    num_layers: int, scale: float,
) -> torch.Tensor:  # fmt: skip
    """``embed`` init from the ``(vocab, M)`` token embeddings, the same rows for every layer."""

    def mean_embedding(prompts: list[str]) -> torch.Tensor:
        ids = [i for p in prompts for i in tokenizer(p, add_special_tokens=False)["input_ids"]]
        return embeddings[torch.tensor(ids)].float().mean(0)

    pos = torch.stack([mean_embedding(p) for p in positives])  # (E, M)
    neg = [mean_embedding(n) if n else None for n in negatives]
    return (_contrast(pos, neg) * scale).expand(num_layers, -1, -1).clone()


def random_rows(num_layers: int, num_experts: int, hidden: int, std: float, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(num_layers, num_experts, hidden, generator=generator) * std


@torch.no_grad()
def prompt_rows(model, tokenizer, positives: list[list[str]], negatives: list[list[str]], scale: float):
    """Prompt-router rows ``(E, 2M)``: the contrast of each expert's mean prompt features
    (``lmfuse.moe.prompt.prompt_features``) with its negatives' or the other experts', unit norm × scale."""
    from lmfuse.moe.prompt import prompt_features

    def mean_features(prompts: list[str]) -> torch.Tensor:
        batch = tokenizer(prompts, return_tensors="pt", padding=True)
        return prompt_features(model, batch["input_ids"], batch["attention_mask"]).mean(0)

    pos = torch.stack([mean_features(p) for p in positives])  # (E, 2M)
    neg = [mean_features(n) if n else None for n in negatives]
    return _contrast(pos, neg) * scale
