"""Ensemble members: a loaded model with its tokenizer, device and EOS ids, and its decoding state.

``MemberState`` owns one member's ``DynamicCache`` and attention mask for a batch. Position ids always
come from the mask (``cumsum - 1``), so left padding, chunks of several tokens and rolled-back caches all
give each real token its true position.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch

from lmfuse.errors import ConfigError, IncompatibleModelsError


@dataclass
class Member:
    """One loaded member."""

    model: Any
    tokenizer: Any
    name: str
    vocab_size: int
    """Rows of the output head that are real tokens: a padded head (more rows than the tokenizer has
    tokens, e.g. Qwen's 151,936 for 151,646) is sliced to this before any softmax."""
    eos_ids: set[int] = field(default_factory=set)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def open(self, batch: int) -> MemberState:
        """A fresh decoding state for ``batch`` rows (remote members return their own kind)."""
        return MemberState(self, batch)


def _as_set(value) -> set[int]:
    if value is None:
        return set()
    return {int(v) for v in value} if isinstance(value, list | tuple | set) else {int(value)}


def eos_ids_of(model, tokenizer) -> set[int]:
    """Every EOS id a member may emit: generation config, model config and tokenizer together."""
    ids = _as_set(getattr(getattr(model, "generation_config", None), "eos_token_id", None))
    ids |= _as_set(getattr(model.config, "eos_token_id", None))
    ids |= _as_set(getattr(tokenizer, "eos_token_id", None))
    return ids


def make_member(model, tokenizer, name: str) -> Member:
    """Wrap a loaded ``(model, tokenizer)``; checks the output head covers the tokenizer."""
    if callable(getattr(model, "route", None)):  # a PromptRoutedMoE: one routing decision per prompt
        raise IncompatibleModelsError(
            f"member {name}: a prompt-routed MoE; the token-level ensemble steps the model token by token "
            "and cannot route by prompt: use it in a text fusion (vote, moa, eot) through an `hf` "
            "backend, or pass its transformers model (`.model`, token-level gates) to ensemble that on purpose"
        )
    out = model.get_output_embeddings()
    head = out.weight.shape[0] if out is not None else int(model.config.vocab_size)
    n_tok = len(tokenizer)
    if head < n_tok:
        raise IncompatibleModelsError(
            f"member {name}: output head has {head:,} rows but its tokenizer has {n_tok:,} tokens; "
            f"expected a head at least as large as the tokenizer (pass the tokenizer saved with the model)"
        )
    if tokenizer.pad_token_id is None:
        # Left padding needs some pad id; its value never matters because the mask hides it.
        tokenizer.pad_token = tokenizer.eos_token
    return Member(model.eval(), tokenizer, name, n_tok, eos_ids_of(model, tokenizer))


def load_member(
    spec, dtype: str | torch.dtype | None = "auto", device: str | None = "cpu", index: int = 0
) -> Member:
    """A member from a path, ``zoo:NAME``, hub id, ``(model, tokenizer)`` pair or ``Member``; a pair is
    named after its model's directory, or ``member{index}``."""
    from lmfuse.ensemble.remote import is_remote, parse_remote

    if isinstance(spec, Member):
        return spec
    if is_remote(spec):
        return spec if hasattr(spec, "open") and not isinstance(spec, dict) else parse_remote(spec, index)
    if isinstance(spec, tuple | list) and len(spec) == 2:
        model, tok = spec
        name = os.path.basename(str(getattr(model.config, "_name_or_path", "") or "").rstrip("/"))
        return make_member(model, tok, name or f"member{index}")
    if isinstance(spec, str | os.PathLike):
        from lmfuse.core.loading import load_model_and_tokenizer

        model, tok = load_model_and_tokenizer(spec, dtype=dtype, device=device)
        return make_member(model, tok, str(spec))
    raise ConfigError(
        f"members: expected a model path, 'zoo:NAME', hub id or a (model, tokenizer) pair, "
        f"found {type(spec).__name__}"
    )


class MemberState:
    """One member decoding a batch: its KV cache and its attention mask (batch, cached length)."""

    def __init__(self, member: Member, batch: int) -> None:
        from transformers import DynamicCache

        self.member = member
        self.cache = DynamicCache(config=member.model.config)
        self.mask = torch.zeros(batch, 0, dtype=torch.long, device=member.device)

    @property
    def length(self) -> int:
        """Tokens in the cache (padding included)."""
        return self.mask.shape[1]

    @torch.no_grad()
    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None, all_logits: bool = False):
        """Append ``ids`` (batch, n) with ``mask`` (batch, n) (1 = real token) and return float32 logits
        of the last position (batch, vocab), or of every new position (batch, n, vocab) with
        ``all_logits``, sliced to the member's real vocabulary."""
        dev = self.member.device
        ids = ids.to(dev)
        mask = torch.ones_like(ids) if mask is None else mask.to(dev, torch.long)
        full = torch.cat([self.mask, mask], dim=1)
        positions = (full.cumsum(-1) - 1).clamp(min=0)[:, -ids.shape[1] :]
        out = self.member.model(
            input_ids=ids,
            attention_mask=full,
            position_ids=positions,
            cache=self.cache,
            use_cache=True,
            logits_to_keep=0 if all_logits else 1,
        )
        self.mask = full
        logits = out.logits[..., : self.member.vocab_size].float()
        return logits if all_logits else logits[:, -1]

    @torch.no_grad()
    def forward_rows(self, rows: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor | None:
        """Like ``forward`` but only for ``rows`` (k,) of the batch: (k, vocab) logits. The other rows
        get masked-out cache columns and keep those ids to read later. ``None`` (nothing done) when the
        cache has layers this cannot slice (sliding windows): call ``forward`` instead."""
        from transformers.cache_utils import DynamicCache, DynamicLayer

        layers = self.cache.layers
        if not layers or not all(type(x) is DynamicLayer and x.is_initialized for x in layers):
            return None
        dev, n = self.member.device, ids.shape[1]
        rows, ids, mask = rows.to(dev), ids.to(dev), mask.to(dev, torch.long)
        sub = DynamicCache([(k[rows], v[rows]) for k, v, *_ in self.cache], config=self.member.model.config)
        full = torch.cat([self.mask[rows], mask[rows]], dim=1)
        positions = (full.cumsum(-1) - 1).clamp(min=0)[:, -n:]
        out = self.member.model(
            input_ids=ids[rows],
            attention_mask=full,
            position_ids=positions,
            cache=sub,
            use_cache=True,
            logits_to_keep=1,
        )
        batch = len(self.mask)
        for layer, (k, v, *_) in zip(layers, sub, strict=True):  # k, v: (rows, heads, length, head_dim)
            new_k = k.new_zeros(batch, k.shape[1], n, k.shape[3])
            new_v = v.new_zeros(batch, v.shape[1], n, v.shape[3])
            new_k[rows], new_v[rows] = k[:, :, -n:], v[:, :, -n:]
            layer.update(new_k, new_v)  # the other rows' new columns are zeros, masked out below
        new_mask = torch.zeros_like(mask)
        new_mask[rows] = mask[rows]
        self.mask = torch.cat([self.mask, new_mask], dim=1)
        return out.logits[:, -1, : self.member.vocab_size].float()

    def drop(self, n: torch.Tensor) -> None:
        """Forget each row's last ``n[r]`` tokens (batch,): their columns are masked out, and the
        columns no row uses any more are cropped."""
        counts = [int(x) for x in n.tolist()]
        width = self.length
        for r, m in enumerate(counts):
            if m > 0:
                self.mask[r, width - m :] = 0
        self.crop(min(counts))

    def crop(self, n: int) -> None:
        """Drop the last ``n`` cached tokens (a rollback), keeping everything before them."""
        if n > 0:
            self.cache.crop(-n)
            self.mask = self.mask[:, :-n]
