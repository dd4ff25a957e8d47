"""The naive ensemble most paper code implements: every step, every member re-reads the whole prefix.

No KV cache, so it is slow (quadratic in length) but obviously right: the reference the cached decoder
is tested against and the baseline the benchmark measures it against. Same-tokenizer members only.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from lmfuse.ensemble.combine import COMBINE
from lmfuse.ensemble.member import Member


@torch.no_grad()
def naive_generate_ids(
    members: Sequence[Member],
    weights: Sequence[float],
    combine: str,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    max_new_tokens: int,
    gate: float | None = None,
    ignore_eos: bool = False,
) -> torch.Tensor:
    """Greedy: left-padded (batch, prompt) → (batch, prompt + new); rows that stopped get the pad id.
    ``gate``: a row whose lead top probability is at least ``gate`` follows the lead alone."""
    ids, mask = input_ids.clone(), attention_mask.clone()
    eos = torch.tensor([] if ignore_eos else sorted(members[0].eos_ids), dtype=torch.long)
    pad = members[0].tokenizer.pad_token_id
    finished = torch.zeros(ids.shape[0], dtype=torch.bool)
    for _ in range(max_new_tokens):
        logits = []
        for m in members:
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            out = m.model(
                input_ids=ids.to(m.device),
                attention_mask=mask.to(m.device),
                position_ids=positions.to(m.device),
            )
            logits.append(out.logits[:, -1, : m.vocab_size].float().cpu())
        logp = COMBINE[combine](logits, weights)
        if gate is not None:
            lead = torch.log_softmax(logits[0], -1)
            logp = torch.where((lead.max(-1).values.exp() >= gate)[:, None], lead, logp)
        token = torch.where(finished, torch.full_like(finished, pad, dtype=torch.long), logp.argmax(-1))
        ids = torch.cat([ids, token[:, None]], 1)
        mask = torch.cat([mask, torch.ones_like(token[:, None])], 1)
        finished |= torch.isin(token, eos)
        if bool(finished.all()):
            break
    return ids
