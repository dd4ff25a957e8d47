"""``tokenizer_source: union``: one vocabulary holding every model's tokens, embeddings merged over it.

Tokens are matched by the bytes they decode to (``core.tokenizers.token_bytes``), not by their
strings, so byte-level BPE's ``Ġthe`` and SentencePiece's ``▁the`` are one token; special tokens match
by their string. The union keeps the base (reference) model's ids in order and appends the other
models' new tokens after them, in model order. The output tokenizer is the base tokenizer with the
new tokens added as added tokens (their decoded text); tokens whose bytes are not valid UTF-8 on
their own cannot be added as text and are left out (``skipped``).

For each union token and each model, the model's embedding (and ``lm_head``) row is its own row when
it has the token; otherwise the base's row when the base has it, else the mean of the rows of the
models that have it — so a model that lacks a token contributes no task vector for it.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lmfuse.core.loading import load_tokenizer
from lmfuse.core.tokenizers import token_bytes

Key = tuple[str, bytes | str]


@dataclass
class UnionVocab:
    """The union vocabulary and, per model, which of its rows each union token comes from."""

    size: int
    rows: dict[str, list[int]]
    """Model name → per union position, that model's row, or −1 when it lacks the token."""
    added: list[str] = field(default_factory=list)
    """Texts added to the base tokenizer, in id order after its own tokens."""
    skipped: int = 0
    """Tokens of other models left out (bytes that are not text on their own)."""


def _keys(tokenizer) -> dict[Key, int]:
    """Token key → id: ``("b", bytes)`` for text tokens, ``("s", string)`` for special ones."""
    by_bytes = token_bytes(tokenizer)
    out: dict[Key, int] = {}
    for text, idx in sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1]):
        b = by_bytes[idx] if idx < len(by_bytes) else None
        key: Key = ("s", text) if b is None else ("b", b)
        out.setdefault(key, idx)
    return out


def build_union(base: str, directories: dict[str, Path]) -> UnionVocab:
    """The union over the tokenizers of ``directories`` (name → model directory), ``base`` first."""
    keys = {name: _keys(load_tokenizer(d)) for name, d in directories.items()}
    order: list[Key] = sorted(keys[base], key=keys[base].__getitem__)
    known = set(order)
    added, skipped = [], 0
    for name, k in keys.items():
        if name == base:
            continue
        for key in sorted(k, key=k.__getitem__):
            if key in known:
                continue
            known.add(key)
            text = key[1] if key[0] == "s" else _text(key[1])
            if text is None:
                skipped += 1
                continue
            order.append(key)
            added.append(text)
    rows = {name: [k.get(key, -1) for key in order] for name, k in keys.items()}
    return UnionVocab(len(order), rows, added, skipped)


def _text(b: bytes) -> str | None:
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return None


def union_tokenizer_files(base_dir: Path, union: UnionVocab) -> dict[str, str]:
    """The base tokenizer with the union's new tokens added, as ``{file name: text}``."""
    tok = load_tokenizer(base_dir)
    before = len(tok)
    tok.add_tokens(union.added)
    if len(tok) != before + len(union.added):
        raise ValueError(f"union tokenizer: expected {before + len(union.added)} tokens, found {len(tok)}")
    with tempfile.TemporaryDirectory() as tmp:
        tok.save_pretrained(tmp)
        return {p.name: p.read_text(encoding="utf-8") for p in Path(tmp).iterdir() if p.is_file()}


def gather_rows(
    tensors: list[torch.Tensor], rows: list[list[int]], base_index: int | None
) -> list[torch.Tensor]:
    """Each model's ``(vocab_i, hidden)`` tensor → ``(union, hidden)`` with the fallback rows above.

    ``base_index``: position of the base in ``tensors`` (``None`` without a base).
    """
    idx = [torch.tensor(r, dtype=torch.long, device=tensors[0].device) for r in rows]
    present = [i >= 0 for i in idx]
    out = [t[i.clamp_min(0)] * p.unsqueeze(-1) for t, i, p in zip(tensors, idx, present, strict=True)]
    count = torch.stack(present).sum(dim=0).clamp_min(1).unsqueeze(-1)
    mean = sum(out) / count
    if base_index is not None:
        base_has = present[base_index].unsqueeze(-1)
        out[base_index] = torch.where(base_has, out[base_index], mean)
        fallback = out[base_index]
    else:
        fallback = mean
    return [torch.where(p.unsqueeze(-1), o, fallback) for o, p in zip(out, present, strict=True)]
