"""``train_prompt_router``: train the prompt router of a ``PromptRoutedMoE`` on prompt + completion data.

The objective is Branch-Train-Merge's expert posterior, learned: for each example the completion's
log-likelihood under every expert alone, ``ℓ_e = log p(completion | prompt, expert e)`` (the prompt routed
with weight 1 to ``e``), and the loss ``-log Σ_e p(e | prompt) · exp(ℓ_e)``, the negative log-likelihood of
the completion under the router's mixture of experts. Its minimum puts the probability on the expert that
predicts the completion best, which is what top-1 routing then runs. The experts and the features are
frozen, so ``ℓ`` and the features are computed once (E forward passes over the data, no gradient) and
only the ``(E, 2M)`` router is optimised, full batch with L-BFGS: seconds, and deterministic.
"""

from __future__ import annotations

import torch

from lmfuse.moe.data import Example
from lmfuse.moe.prompt import PromptRoutedMoE, PromptRouting, fixed_routing, prompt_features
from lmfuse.moe.train_router import TrainRouterConfig, TrainRouterResult, _batch

CHUNK = 64
"""Examples per no-grad forward pass."""


def train_prompt_router(
    prm: PromptRoutedMoE,
    tokenizer,
    examples: list[Example],
    cfg: TrainRouterConfig | None = None,
    progress: bool = False,
) -> TrainRouterResult:
    """Train ``prm.weight`` in place with up to ``cfg.steps`` L-BFGS iterations (``lr`` and
    ``batch_size`` are for token routing); ``losses`` has the loss at each evaluation, in nats per example."""

    cfg = cfg or TrainRouterConfig()
    missing = sum(e.prompt is None for e in examples)
    if not examples or missing:
        raise ValueError(
            "prompt-router training needs prompt + completion examples "
            f'({{"prompt": ..., "completion": ...}} records); found {missing} of {len(examples)} without a prompt'
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    features, loglik = _targets(prm, tokenizer, examples, cfg, progress)  # (N, 2M), (N, E)
    weight = torch.nn.Parameter(prm.weight.clone())
    # full batch over the cached targets: the router is tiny and L-BFGS with a line search needs no
    # learning rate (Adam on this non-convex objective collapsed close experts into one at lr 0.05)
    optimiser = torch.optim.LBFGS([weight], lr=1.0, max_iter=cfg.steps, line_search_fn="strong_wolfe")
    result = TrainRouterResult(
        trained_params=weight.numel(), frozen_params=sum(p.numel() for p in prm.model.parameters())
    )

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        log_prior = torch.log_softmax(features @ weight.T, dim=-1)  # (N, E)
        loss = -(log_prior + loglik).logsumexp(-1).mean()
        loss.backward()
        result.losses.append(loss.item())
        return loss

    optimiser.step(closure)
    prm.weight = weight.detach().clone()
    return result


@torch.no_grad()
def _targets(prm: PromptRoutedMoE, tokenizer, examples: list[Example], cfg, progress: bool):
    """Prompt features ``(N, 2M)`` and each expert's completion log-likelihood ``(N, E)``, fp32."""
    from tqdm.auto import tqdm

    model, n_exp = prm.model, prm.num_experts
    suffix = tokenizer.eos_token if cfg.append_eos and tokenizer.eos_token else ""
    was_training, side = model.training, tokenizer.padding_side
    model.eval()
    feats, logliks = [], []
    try:
        for i in tqdm(range(0, len(examples), CHUNK), desc="expert likelihoods", disable=not progress):
            chunk = examples[i : i + CHUNK]
            tokenizer.padding_side = "left"
            enc = tokenizer([e.prompt for e in chunk], return_tensors="pt", padding=True).to(model.device)
            feats.append(prompt_features(model, enc["input_ids"], enc["attention_mask"]).cpu())
            tokenizer.padding_side = "right"  # positions as the zoo and train-router learn them
            batch, labels = _batch(tokenizer, chunk, suffix)
            batch, labels = batch.to(model.device), labels.to(model.device)
            per_expert = []
            for e in range(n_exp):
                with fixed_routing(model, PromptRouting.one_hot([e] * len(chunk), n_exp)):
                    logits = model(**batch).logits.float()
                per_expert.append(_sequence_loglik(logits, labels))
            logliks.append(torch.stack(per_expert, dim=-1).cpu())
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return torch.cat(feats), torch.cat(logliks)


def _sequence_loglik(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``logits`` ``(B, T, V)``, ``labels`` ``(B, T)`` with -100 → ``(B,)`` summed next-token log-probs."""
    logp = torch.log_softmax(logits[:, :-1], dim=-1)
    target = labels[:, 1:]
    keep = target != -100
    picked = logp.gather(-1, target.clamp_min(0)[..., None])[..., 0]
    return (picked * keep).sum(-1)
