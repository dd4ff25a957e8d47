"""Load-balancing losses as pure functions, each scaled to equal 1.0 at perfect balance, and the
aux-loss-free bias update of DeepSeek-V3.

Notation: ``probs`` ``(S, E)`` router probabilities (or normalised scores), ``indices`` ``(S, k)``,
``mask`` ``(S,)`` the real tokens (padding counts nowhere, as transformers' ``attention_mask``). Losses are
computed in the input's precision (at least fp32; fp64 stays fp64) and are 0, with no gradient, for 0 tokens.
Multiply by the paper's coefficient (Switch α = 0.01, DeepSeekMoE α1 = 0.001, V3 α = 0.0001) outside.
"""

from __future__ import annotations

import torch


def loss_precision(t: torch.Tensor) -> torch.Tensor:
    """At least fp32: bf16/fp16 go up to fp32, fp64 (gradcheck) stays fp64."""
    return t if t.dtype == torch.float64 else t.float()


def _token_weights(mask: torch.Tensor | None, num_tokens: int, like: torch.Tensor) -> torch.Tensor | None:
    """``mask`` ``(S,)`` (bool or 0/1; ``None`` = every token real) as weights in ``like``'s dtype."""
    if mask is None:
        return None
    mask = mask.reshape(-1)
    if mask.numel() != num_tokens:
        raise ValueError(f"mask: expected {num_tokens} entries (one per token), found {mask.numel()}")
    return mask.to(device=like.device, dtype=like.dtype)


def _mean_probs(probs: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``(E,)`` mean of ``probs`` over the real tokens; 0 (and no gradient) when there are none."""
    probs = loss_precision(probs)
    w = _token_weights(mask, probs.shape[0], probs)
    if w is None:
        return probs.sum(0) / max(probs.shape[0], 1)
    return (probs * w[:, None]).sum(0) / w.sum().clamp_min(1)


def _shares(indices: torch.Tensor, num_experts: int, mask=None, dtype=torch.float32) -> torch.Tensor:
    """``(E,)`` share of the ``S·k`` routed slots of real tokens that went to each expert (sums to 1)."""
    s, k = indices.shape  # (S, k)
    ones = torch.ones(s, k, dtype=dtype, device=indices.device)
    w = _token_weights(mask, s, ones)
    if w is not None:
        ones = ones * w[:, None]
    counts = torch.zeros(num_experts, dtype=dtype, device=indices.device)
    counts.index_add_(0, indices.reshape(-1), ones.reshape(-1))
    return counts / ones.sum().clamp_min(1)


def balance_loss(
    probs: torch.Tensor, first_choice: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """GShard/Switch aux loss ``E·Σ_e m_e·f_e``: ``m`` mean gate probability, ``f`` share of first choices.

    1.0 at perfect balance, ``E`` at full collapse (the paper's ``(1/E)Σ(c_e/S)m_e`` times ``E²``).
    ``mask`` ``(S,)``: real tokens (padding counts in neither ``m`` nor ``f``). 0 for zero tokens.
    """
    e = probs.shape[-1]
    m = _mean_probs(probs, mask)
    f = _shares(first_choice.reshape(-1, 1), e, mask, m.dtype)
    return e * (f * m).sum()


def topk_balance_loss(
    probs: torch.Tensor, indices: torch.Tensor, hf_scaling: bool = False, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Top-k aux loss ``E·Σ_e f_e·m_e`` with ``f`` over all ``k`` choices: 1.0 at balance.

    ``hf_scaling=True`` multiplies by ``k``, matching transformers' ``load_balancing_loss_func`` (k at balance);
    with ``mask`` it equals that function given the same ``attention_mask``.
    """
    e, k = probs.shape[-1], indices.shape[-1]
    m = _mean_probs(probs, mask)
    loss = e * (_shares(indices, e, mask, m.dtype) * m).sum()
    return loss * k if hf_scaling else loss


def router_z_loss(logits: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """ST-MoE z-loss: mean over (real) tokens of ``logsumexp(logits)²``; ``(ln E)²`` for all-zero logits."""
    z = torch.logsumexp(loss_precision(logits), dim=-1).pow(2)
    w = _token_weights(mask, z.shape[0], z)
    if w is None:
        return z.sum() / max(z.shape[0], 1)
    return (z * w).sum() / w.sum().clamp_min(1)


def expert_balance_loss(
    probs: torch.Tensor, indices: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """DeepSeekMoE expert-level loss ``Σ_i f_i·P_i``, ``f_i = E/(k·S)·count_i``; 1.0 at balance."""
    e = probs.shape[-1]
    m = _mean_probs(probs, mask)
    f = _shares(indices, e, mask, m.dtype) * e  # E/(kS)·count
    return (f * m).sum()


def device_balance_loss(
    probs: torch.Tensor, indices: torch.Tensor, num_devices: int, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """DeepSeekMoE device-level loss ``Σ_d f'_d·P'_d`` over ``num_devices`` equal expert groups.

    ``f'_d`` mean of ``f_i`` in group ``d``, ``P'_d`` sum of ``P_i`` in it; 1.0 at balance.
    """
    e = probs.shape[-1]
    if e % num_devices:
        raise ValueError(f"num_devices must divide the {e} experts, found {num_devices}")
    m = _mean_probs(probs, mask)
    f = (_shares(indices, e, mask, m.dtype) * e).view(num_devices, -1).mean(-1)
    p = m.view(num_devices, -1).sum(-1)
    return (f * p).sum()


def normalised_scores(scores: torch.Tensor) -> torch.Tensor:
    """Sigmoid scores ``(S, E)`` → per-token distributions ``s / Σ_j s_j`` (DeepSeek-V3's ``P_i``), the form
    the balance losses expect (raw sigmoid scores would give ``E/2`` at balance)."""
    scores = loss_precision(scores)
    return scores / scores.sum(-1, keepdim=True).clamp_min(1e-20)


def sequence_balance_loss(scores: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """DeepSeek-V3 sequence-wise loss, averaged over sequences: 1.0 at balance.

    ``scores``: ``(B, T, E)`` sigmoid scores; ``indices``: ``(B, T, k)``. Per sequence,
    ``f_i = E/(k·T)·count_i`` and ``P_i`` = mean over tokens of ``scores / Σ_j scores``.
    """
    b, t, e = scores.shape
    k = indices.shape[-1]
    scores = loss_precision(scores)
    ones = torch.ones(b, t * k, device=scores.device, dtype=scores.dtype)
    counts = torch.zeros(b, e, device=scores.device, dtype=scores.dtype).scatter_add_(
        1, indices.reshape(b, -1), ones
    )
    f = counts * e / max(k * t, 1)
    p = normalised_scores(scores).sum(1) / max(t, 1)
    return (f * p).sum(-1).sum() / max(b, 1)


def bias_update(bias: torch.Tensor, load: torch.Tensor, rate: float = 0.001) -> torch.Tensor:
    """Aux-loss-free balancing: move each expert's selection bias by ``rate`` toward balance.

    ``load`` ``(E,)`` tokens per expert in the last step. Overloaded experts go down, underloaded up.
    """
    load = load.float()
    return bias + rate * torch.sign(load.mean() - load)
