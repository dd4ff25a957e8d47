"""Load-balancing losses as pure functions, each scaled to equal 1.0 at perfect balance, and the
aux-loss-free bias update of DeepSeek-V3.

Notation: ``probs`` ``(S, E)`` router probabilities (or normalised scores), ``indices`` ``(S, k)``.
Multiply by the paper's coefficient (Switch α = 0.01, DeepSeekMoE α1 = 0.001, V3 α = 0.0001) outside.
"""

from __future__ import annotations

import torch


def _shares(indices: torch.Tensor, num_experts: int) -> torch.Tensor:
    """``(E,)`` share of the ``S·k`` routed slots that went to each expert (sums to 1)."""
    counts = torch.bincount(indices.reshape(-1), minlength=num_experts).float()
    return counts / indices.numel()


def balance_loss(probs: torch.Tensor, first_choice: torch.Tensor) -> torch.Tensor:
    """GShard/Switch aux loss ``E·Σ_e m_e·f_e``: ``m`` mean gate probability, ``f`` share of first choices.

    1.0 at perfect balance, ``E`` at full collapse (the paper's ``(1/E)Σ(c_e/S)m_e`` times ``E²``).
    """
    e = probs.shape[-1]
    f = _shares(first_choice.reshape(-1, 1), e)
    return e * (f * probs.float().mean(0)).sum()


def topk_balance_loss(probs: torch.Tensor, indices: torch.Tensor, hf_scaling: bool = False) -> torch.Tensor:
    """Top-k aux loss ``E·Σ_e f_e·m_e`` with ``f`` over all ``k`` choices: 1.0 at balance.

    ``hf_scaling=True`` multiplies by ``k``, matching transformers' ``load_balancing_loss_func`` (k at balance).
    """
    e, k = probs.shape[-1], indices.shape[-1]
    loss = e * (_shares(indices, e) * probs.float().mean(0)).sum()
    return loss * k if hf_scaling else loss


def router_z_loss(logits: torch.Tensor) -> torch.Tensor:
    """ST-MoE z-loss: mean over tokens of ``logsumexp(logits)²``; ``(ln E)²`` for all-zero logits."""
    return torch.logsumexp(logits.float(), dim=-1).pow(2).mean()


def expert_balance_loss(probs: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """DeepSeekMoE expert-level loss ``Σ_i f_i·P_i``, ``f_i = E/(k·S)·count_i``; 1.0 at balance."""
    e = probs.shape[-1]
    f = _shares(indices, e) * e  # E/(kS)·count
    return (f * probs.float().mean(0)).sum()


def device_balance_loss(probs: torch.Tensor, indices: torch.Tensor, num_devices: int) -> torch.Tensor:
    """DeepSeekMoE device-level loss ``Σ_d f'_d·P'_d`` over ``num_devices`` equal expert groups.

    ``f'_d`` mean of ``f_i`` in group ``d``, ``P'_d`` sum of ``P_i`` in it; 1.0 at balance.
    """
    e = probs.shape[-1]
    if e % num_devices:
        raise ValueError(f"num_devices must divide the {e} experts, found {num_devices}")
    f = (_shares(indices, e) * e).view(num_devices, -1).mean(-1)
    p = probs.float().mean(0).view(num_devices, -1).sum(-1)
    return (f * p).sum()


def sequence_balance_loss(scores: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """DeepSeek-V3 sequence-wise loss, averaged over sequences: 1.0 at balance.

    ``scores``: ``(B, T, E)`` sigmoid scores; ``indices``: ``(B, T, k)``. Per sequence,
    ``f_i = E/(k·T)·count_i`` and ``P_i`` = mean over tokens of ``scores / Σ_j scores``.
    """
    b, t, e = scores.shape
    k = indices.shape[-1]
    counts = torch.zeros(b, e, device=scores.device).scatter_add_(
        1, indices.reshape(b, -1), torch.ones(b, t * k, device=scores.device)
    )
    f = counts * e / (k * t)
    p = (scores.float() / scores.float().sum(-1, keepdim=True)).mean(1)
    return (f * p).sum(-1).mean()


def bias_update(bias: torch.Tensor, load: torch.Tensor, rate: float = 0.001) -> torch.Tensor:
    """Aux-loss-free balancing: move each expert's selection bias by ``rate`` toward balance.

    ``load`` ``(E,)`` tokens per expert in the last step. Overloaded experts go down, underloaded up.
    """
    load = load.float()
    return bias + rate * torch.sign(load.mean() - load)
