"""Byte-level alignment of different vocabularies, and the load-time report of how much maps.

A token is keyed by the bytes it decodes to (``core.tokenizers.token_bytes``), never by its string;
special tokens have no bytes and never enter a union. A byte string that is not a token of a member is
scored for that member by its longest prefix that is one (the member's first token of that text).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

from lmfuse.core.tokenizers import token_bytes
from lmfuse.ensemble.member import Member


@dataclass
class VocabMap:
    """One member's vocabulary seen as bytes."""

    token_bytes: list[bytes | None]
    """Bytes of each id below the member's vocab size (``None``: special or unused)."""
    ids: dict[bytes, int]
    """bytes → id (the lowest id when several decode to the same bytes)."""
    max_len: int

    @classmethod
    def of(cls, member: Member) -> VocabMap:
        tb = token_bytes(member.tokenizer)[: member.vocab_size]
        tb += [None] * (member.vocab_size - len(tb))
        ids: dict[bytes, int] = {}
        for i, b in enumerate(tb):
            if b:
                ids.setdefault(b, i)
        return cls(tb, ids, max((len(b) for b in ids), default=0))

    @cached_property
    def all_ids(self) -> dict[bytes, list[int]]:
        """bytes → every id that decodes to them (``ids`` keeps the lowest)."""
        table: dict[bytes, list[int]] = {}
        for i, b in enumerate(self.token_bytes):
            if b:
                table.setdefault(b, []).append(i)
        return table

    def longest_prefix(self, data: bytes, longer_than: int = 0) -> int | None:
        """Id of the longest token that is a prefix of ``data`` and longer than ``longer_than`` bytes."""
        for n in range(min(len(data), self.max_len), longer_than, -1):
            idx = self.ids.get(data[:n])
            if idx is not None:
                return idx
        return None

    def greedy_ids(self, data: bytes) -> list[int] | None:
        """``data`` spelled with longest-prefix tokens; ``None`` if some byte has no token."""
        out: list[int] = []
        while data:
            idx = self.longest_prefix(data)
            if idx is None:
                return None
            out.append(idx)
            data = data[len(self.token_bytes[idx]) :]
        return out


@dataclass
class MemberCoverage:
    """How one member's vocabulary maps onto the others'."""

    name: str
    vocab_size: int
    with_bytes: int
    """Ids that decode to bytes (the rest are special tokens or unused rows)."""
    exact: dict[str, float] = field(default_factory=dict)
    """Other member → share of this member's byte tokens that are exactly a token there."""


@dataclass
class AlignmentReport:
    """Load-time report of a byte-aligned ensemble."""

    members: list[MemberCoverage]

    def summary(self) -> str:
        lines = ["byte alignment of the members' vocabularies:"]
        for c in self.members:
            shares = ", ".join(f"{share:.0%} exactly in {other}" for other, share in c.exact.items())
            lines.append(f"  {c.name}: {c.vocab_size:,} ids, {c.with_bytes:,} with bytes; {shares}")
        lines.append("  (tokens not found exactly are scored through their longest prefix that is a token)")
        return "\n".join(lines)


def alignment_report(members: Sequence[Member], maps: Sequence[VocabMap]) -> AlignmentReport:
    """Share of each member's byte tokens that are exactly a token of each other member."""
    rows = []
    for i, (m, vm) in enumerate(zip(members, maps, strict=True)):
        cov = MemberCoverage(m.name, m.vocab_size, len(vm.ids))
        for j, (other, om) in enumerate(zip(members, maps, strict=True)):
            if i != j:
                hit = sum(1 for b in vm.ids if b in om.ids)
                cov.exact[other.name] = hit / max(len(vm.ids), 1)
        rows.append(cov)
    return AlignmentReport(rows)
