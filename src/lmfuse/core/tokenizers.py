"""Tokenizer comparison and byte-level token alignment.

Two models can be fused token by token only if their vocabularies agree, or if tokens are aligned by
the *bytes* they decode to (not their strings: byte-level BPE writes a space as ``Ġ``, SentencePiece as
``▁`` and raw bytes as ``<0x0A>``). ``token_bytes`` gives each id its bytes; special tokens get ``None``
so they never enter a union by string.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache


@dataclass
class TokenizerReport:
    """How two tokenizers compare."""

    name_a: str
    name_b: str
    size_a: int
    size_b: int
    same_vocab: bool
    """Every token string maps to the same id in both."""
    shared_strings: int
    """Token strings present in both (ids may differ)."""
    special_diffs: list[str] = field(default_factory=list)
    """Special tokens that differ, e.g. ``eos: '</s>' (2) vs '<|endoftext|>' (151643)``."""

    @property
    def compatible(self) -> bool:
        """Same vocabulary and same special tokens: token-level fusion needs no alignment."""
        return self.same_vocab and not self.special_diffs

    def summary(self) -> str:
        if self.compatible:
            return f"tokenizers of {self.name_a} and {self.name_b} are identical ({self.size_a:,} tokens)"
        lines = [
            f"tokenizers of {self.name_a} and {self.name_b} differ "
            f"({self.size_a:,} vs {self.size_b:,} tokens, {self.shared_strings:,} token strings shared)"
        ]
        lines += [f"  special token {d}" for d in self.special_diffs]
        return "\n".join(lines)


_SPECIAL_ROLES = ("bos_token", "eos_token", "pad_token", "unk_token")


def compare_tokenizers(tok_a, tok_b, name_a: str = "A", name_b: str = "B") -> TokenizerReport:
    """Compare vocabularies (string → id) and the bos/eos/pad/unk tokens of two HF tokenizers."""
    va, vb = tok_a.get_vocab(), tok_b.get_vocab()
    diffs = []
    for role in _SPECIAL_ROLES:
        ta, tb = getattr(tok_a, role, None), getattr(tok_b, role, None)
        ia, ib = va.get(ta) if ta else None, vb.get(tb) if tb else None
        if (ta, ia) != (tb, ib):
            diffs.append(f"{role[:-6]}: {ta!r} ({ia}) vs {tb!r} ({ib})")
    return TokenizerReport(
        name_a=name_a,
        name_b=name_b,
        size_a=len(va),
        size_b=len(vb),
        same_vocab=va == vb,
        shared_strings=len(va.keys() & vb.keys()),
        special_diffs=diffs,
    )


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's bytes→printable-unicode table used by byte-level BPE."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


_BYTE_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


def _decoder_kinds(tokenizer) -> set[str]:
    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_tokenizer", None)
    if backend is None:
        return set()
    spec = json.loads(backend.to_str()).get("decoder") or {}
    kinds = {spec.get("type", "")}
    for sub in spec.get("decoders", []) or []:
        kinds.add(sub.get("type", ""))
        if sub.get("type") == "Replace" and sub.get("pattern", {}).get("String") == "▁":
            kinds.add("Metaspace")
    return kinds


def token_bytes(tokenizer) -> list[bytes | None]:
    """Bytes each id decodes to (``None`` for special/added-control tokens and unused ids).

    Handles byte-level BPE (GPT-2/Llama-3/Qwen), SentencePiece-style ``▁`` + ``<0xNN>`` byte fallback
    (Llama-2/Mistral), and plain vocabularies whose strings are their text (char/word level).
    """
    vocab = tokenizer.get_vocab()
    size = max(vocab.values()) + 1 if vocab else 0
    out: list[bytes | None] = [None] * size
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    # Added tokens flagged special but not named in the special-tokens map (Llama-3's reserved tokens,
    # a converted tiktoken file's <|im_start|>) are special too: never bytes, never in a union. Byte
    # fallback pieces <0xNN> are bytes even when a tokenizer registers them as special added tokens.
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    special |= {i for i, t in added.items() if t.special and not _BYTE_TOKEN.match(t.content)}
    kinds = _decoder_kinds(tokenizer)
    byte_level = "ByteLevel" in kinds
    metaspace = "Metaspace" in kinds
    table = _byte_decoder()
    for text, idx in vocab.items():
        if idx in special:
            continue
        if byte_level and all(ch in table for ch in text):
            out[idx] = bytes(table[ch] for ch in text)
            continue
        m = _BYTE_TOKEN.match(text) if metaspace else None
        if m:
            out[idx] = bytes([int(m.group(1), 16)])
        elif metaspace:
            out[idx] = text.replace("▁", " ").encode("utf-8")
        else:
            out[idx] = text.encode("utf-8")
    return out


TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "merges.txt", "tokenizer_config.json")
_PROBE = "Hello, world! 0123456789 +-*/= Q: 37+48= A: 85\n\tcafé 日本語 naïve  spaces"


def tokenizer_difference(dir_a, dir_b, name_a: str = "A", name_b: str = "B") -> str | None:
    """How the tokenizers saved in two model directories differ in what they *do*, or ``None`` if they
    agree: same token → id map, same special tokens, same ids for a probe text.

    Identical files agree at once; otherwise both are loaded and compared, so a re-save that only adds
    keys to ``tokenizer_config.json`` is the same tokenizer, and a permuted vocabulary is not.
    """
    from pathlib import Path

    from lmfuse.core.loading import load_tokenizer

    files_a = {n: (Path(dir_a) / n).read_bytes() for n in TOKENIZER_FILES if (Path(dir_a) / n).is_file()}
    files_b = {n: (Path(dir_b) / n).read_bytes() for n in TOKENIZER_FILES if (Path(dir_b) / n).is_file()}
    if files_a == files_b:
        return None
    if not files_a or not files_b:
        lacking = name_a if not files_a else name_b
        return f"{lacking!r} has no tokenizer files ({', '.join(TOKENIZER_FILES[:2])}, ...)"
    tok_a, tok_b = load_tokenizer(dir_a), load_tokenizer(dir_b)
    report = compare_tokenizers(tok_a, tok_b, name_a, name_b)
    if not report.compatible:
        moved = sum(1 for s, i in tok_a.get_vocab().items() if tok_b.get_vocab().get(s, i) != i)
        extra = f"; {moved} token strings have different ids" if moved else ""
        return report.summary().replace("\n", ";") + extra
    ids_a, ids_b = tok_a(_PROBE)["input_ids"], tok_b(_PROBE)["input_ids"]
    if ids_a != ids_b:
        return (
            f"tokenizers of {name_a} and {name_b} share a vocabulary but split text differently "
            f"(normaliser or pre-tokeniser): {len(ids_a)} vs {len(ids_b)} tokens for the same probe text"
        )
    return None
