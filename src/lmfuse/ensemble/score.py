"""The ensemble's log-likelihood of texts (``Ensemble.score``): one forward per member, the
distributions combined position by position (members that share a tokenizer)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from lmfuse.ensemble.combine import COMBINE
from lmfuse.errors import ConfigError, IncompatibleModelsError


@dataclass
class ScoreResult:
    """The ensemble's log-likelihood of one continuation."""

    logprob: float
    """Sum of natural-log probabilities of the continuation's tokens."""
    tokens: int

    @property
    def perplexity(self) -> float:
        return math.exp(-self.logprob / max(self.tokens, 1))


@torch.no_grad()
def score_texts(ens, texts: Sequence[str], prompts: Sequence[str] | None = None) -> list[ScoreResult]:
    """See ``Ensemble.score``."""
    if not ens.shared_vocab:
        raise IncompatibleModelsError(
            "score needs members that share a tokenizer: per-token likelihoods of different "
            "vocabularies cannot be combined position by position"
        )
    if prompts is not None and len(prompts) != len(texts):
        raise ConfigError(f"prompts: expected one per text ({len(texts)}), found {len(prompts)}")
    if not texts:
        return []
    tok = ens.members[0].tokenizer
    rows, starts = [], []
    for i, text in enumerate(texts):
        head = tok(prompts[i])["input_ids"] if prompts is not None else tok("")["input_ids"]
        body = tok(text, add_special_tokens=False)["input_ids"]
        if not head and not body:
            raise ConfigError(f"texts[{i}]: expected some text to score, found an empty string")
        if not head:  # without a BOS the first token has no context: score from the second
            head, body = body[:1], body[1:]
        rows.append(head + body)
        starts.append(len(head))
    width = max(map(len, rows))
    ids = torch.tensor([[tok.pad_token_id] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    logits = [m.open(len(rows)).forward(ids, mask, all_logits=True).to(ens.device) for m in ens.members]
    logp = COMBINE[ens.combine](logits, ens.weights)[:, :-1]  # (batch, width-1, vocab)
    target = ids[:, 1:].to(ens.device)
    got = logp.gather(-1, target[..., None]).squeeze(-1)  # (batch, width-1)
    out = []
    for r, row in enumerate(rows):
        first = width - len(row) + starts[r] - 1  # position predicting the first scored token
        out.append(ScoreResult(float(got[r, first:].sum()), width - 1 - first))
    return out
