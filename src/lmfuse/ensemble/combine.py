"""Combine members' next-token scores into one distribution, then pick the next token.

Each combine mode is a small function ``(logits list of (..., vocab), weights) -> log-probs (..., vocab)``;
the sampling steps (temperature, top-k, top-p) are ``log-probs -> log-probs`` processors applied to the
*combined* distribution, in that order, like transformers' ``LogitsProcessor`` chain.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

CombineFn = Callable[[Sequence[torch.Tensor], Sequence[float]], torch.Tensor]


def _log_probs(logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """(members, ..., vocab) float32 log-probabilities of each member."""
    return torch.stack([torch.log_softmax(x.float(), dim=-1) for x in logits])


def _weights(weights: Sequence[float], like: torch.Tensor) -> torch.Tensor:
    """Weights shaped (members, 1, ..., 1) to broadcast over (members, ..., vocab)."""
    w = torch.tensor(list(weights), dtype=torch.float32, device=like.device)
    return w.view(-1, *([1] * (like.dim() - 1)))


def combine_prob(logits: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """log Σ_m w_m p_m: the weighted mean of probabilities, in log space (logsumexp) for stability."""
    lp = _log_probs(logits)
    logw = torch.log(_weights(weights, lp))  # log 0 = -inf drops a member exactly
    return torch.logsumexp(lp + logw, dim=0)


def combine_logprob(logits: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """Renormalised Σ_m w_m log p_m (a weighted geometric mean of the distributions)."""
    lp = _log_probs(logits)
    w = _weights(weights, lp)
    mixed = torch.where(w > 0, w * lp, torch.zeros_like(lp)).sum(0)  # 0·(-inf) would be NaN
    return torch.log_softmax(mixed, dim=-1)


def combine_logit(logits: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """log-softmax of Σ_m w_m logits_m (raw logits; members should be calibrated alike)."""
    x = torch.stack([t.float() for t in logits])
    w = _weights(weights, x)
    return torch.log_softmax(torch.where(w > 0, w * x, torch.zeros_like(x)).sum(0), dim=-1)


def combine_max(logits: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """Renormalised max_m w_m p_m: each token gets its most confident member's (weighted) probability."""
    lp = _log_probs(logits)
    best = (lp + torch.log(_weights(weights, lp))).max(dim=0).values
    return torch.log_softmax(best, dim=-1)


COMBINE: dict[str, CombineFn] = {
    "prob": combine_prob,
    "logprob": combine_logprob,
    "logit": combine_logit,
    "max": combine_max,
}
"""Combine modes by name."""


def normalise_weights(weights: Sequence[float] | None, n: int) -> list[float]:
    """Equal weights when ``None``; otherwise non-negative, one per member, scaled to sum to 1."""
    from lmfuse.errors import ConfigError

    if weights is None:
        return [1.0 / n] * n
    w = [float(x) for x in weights]
    problems = []
    if len(w) != n:
        problems.append(f"weights: expected one weight per member ({n}), found {len(w)}")
    if any(not math.isfinite(x) or x < 0 for x in w):
        problems.append(f"weights: expected finite non-negative numbers, found {w}")
    elif sum(w) <= 0:
        problems.append(f"weights: at least one weight must be positive, found {w}")
    if problems:
        raise ConfigError(problems)
    total = sum(w)
    return [x / total for x in w]


# --- processors on the combined distribution: (batch, vocab) log-probs -> (batch, vocab) log-probs ---


def apply_temperature(logp: torch.Tensor, temperature: float) -> torch.Tensor:
    """Sharpen (<1) or flatten (>1) the combined distribution."""
    return torch.log_softmax(logp / temperature, dim=-1) if temperature != 1.0 else logp


def apply_top_k(logp: torch.Tensor, top_k: int) -> torch.Tensor:
    """Keep the ``top_k`` most likely tokens of each row (ties at the boundary are kept)."""
    if top_k <= 0 or top_k >= logp.shape[-1]:
        return logp
    kth = torch.topk(logp, top_k, dim=-1).values[..., -1:]
    return logp.masked_fill(logp < kth, float("-inf"))


def apply_top_p(logp: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose probability reaches ``top_p`` (nucleus)."""
    if top_p >= 1.0:
        return logp
    sorted_lp, order = torch.sort(logp, dim=-1, descending=True)
    cum = sorted_lp.softmax(-1).cumsum(-1)
    # drop a token when the mass *before* it already reaches top_p; the first token always stays
    drop_sorted = (cum - sorted_lp.softmax(-1)) >= top_p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logp.masked_fill(drop, float("-inf"))


def next_tokens(
    logp: torch.Tensor,
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """(batch, vocab) combined log-probs → (batch,) token ids: argmax when ``temperature`` is 0, else a
    sample after temperature, top-k and top-p."""
    if temperature <= 0:
        return logp.argmax(dim=-1)
    logp = apply_top_p(apply_top_k(apply_temperature(logp, temperature), top_k), top_p)
    return torch.multinomial(logp.softmax(-1), 1, generator=generator).squeeze(-1)
