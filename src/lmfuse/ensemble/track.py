"""How one member follows committed *text* (byte alignment): its own ids per row, and its batched cache.

``Track`` (one row) turns committed bytes into the member's ids: one token when the new bytes are one
of its tokens, else the member's own tokenization of the generated text. ``TrackBatch`` (all rows) keeps
the cache in step with those ids: per row, the ids its cache holds and the cache slot of each. A row
whose ids changed drops the differing slots (attention mask 0, positions follow the mask) and the new
ids of all rows are fed in one left-padded chunk; slots dead in every row at the end are cropped.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field

import torch

from lmfuse.ensemble.align import VocabMap
from lmfuse.ensemble.member import Member


@dataclass
class Track:
    """One member, one row: the ids it should have after the committed bytes ``[:consumed]``."""

    member: Member
    vmap: VocabMap
    prompt: list[int]
    gen: list[int] = field(default_factory=list)
    consumed: int = 0

    @property
    def want(self) -> list[int]:
        return self.prompt + self.gen

    def advance(self, text: bytes) -> None:
        """Follow committed bytes ``text`` (ids only; the model runs in ``TrackBatch.sync``)."""
        lag = text[self.consumed :]
        if not lag:
            return
        one = self.vmap.ids.get(lag)
        if one is not None:  # the common case: the new bytes are one of this member's tokens
            self.gen.append(one)
            self.consumed = len(text)
            return
        valid = utf8_prefix(text)
        if len(valid) <= self.consumed:
            return  # a character is not complete yet: wait for its remaining bytes
        self.gen = self._encode(valid)
        self.consumed = len(valid)

    def _encode(self, data: bytes) -> list[int]:
        """The member's own tokenization of ``data``; longest-prefix spelling if that does not
        reproduce the bytes exactly (e.g. a tokenizer that adds a prefix space)."""
        ids = self.member.tokenizer(data.decode("utf-8"), add_special_tokens=False)["input_ids"]
        tb = self.vmap.token_bytes
        if all(i < len(tb) and tb[i] for i in ids) and b"".join(tb[i] for i in ids) == data:
            return ids
        return self.vmap.greedy_ids(data) or ids


class TrackBatch:
    """One member decoding a batch of rows by text: its ``MemberState`` and one ``Track`` per row."""

    def __init__(
        self, member: Member, vmap: VocabMap, prompts: list[list[int]], device: torch.device
    ) -> None:
        self.member = member
        self.state = member.open(len(prompts))
        self.tracks = [Track(member, vmap, p) for p in prompts]
        self.cached: list[list[int]] = [[] for _ in prompts]
        """Per row, the ids whose keys/values the cache holds, in order."""
        self.slots: list[list[int]] = [[] for _ in prompts]
        """Per row, the cache column of each cached id."""
        self.logits = torch.zeros(len(prompts), member.vocab_size, device=device)
        self.fresh = [False] * len(prompts)

    def sync(self, rows: list[int]) -> torch.Tensor:
        """Bring the cache of ``rows`` to their tracks' ids and return (batch, vocab) next-token logits
        (valid for ``rows``): differing slots dropped, new ids fed in one chunk."""
        if hasattr(self.state, "score_next"):  # remote: the server's prefix cache plays the cache
            return self._sync_remote(rows)
        feeds: dict[int, list[int]] = {}
        for r in rows:
            want, have = self.tracks[r].want, self.cached[r]
            same = len(have) if want[: len(have)] == have else 0  # usually the cache is a prefix
            while same < min(len(want), len(have)) and want[same] == have[same]:
                same += 1
            if same == len(want) == len(have) and self.fresh[r]:
                continue
            same = min(same, len(want) - 1)  # at least one id must be fed to get logits
            self.state.mask[r, self.slots[r][same:]] = 0  # roll back: those slots no longer count
            self.cached[r], self.slots[r] = want[:same], self.slots[r][:same]
            feeds[r] = want[same:]
        self._crop_dead_tail()
        if feeds:
            self._feed(feeds)
        return self.logits

    def _sync_remote(self, rows: list[int]) -> torch.Tensor:
        todo = [r for r in rows if not (self.fresh[r] and self.cached[r] == self.tracks[r].want)]
        if todo:
            got = self.state.score_next([self.tracks[r].want for r in todo])
            for r, logp in zip(todo, got.to(self.logits.device), strict=True):
                self.logits[r], self.cached[r], self.fresh[r] = logp, list(self.tracks[r].want), True
        return self.logits

    def _feed(self, feeds: dict[int, list[int]]) -> None:
        width = max(map(len, feeds.values()))
        batch = len(self.tracks)
        pad = self.member.tokenizer.pad_token_id
        ids = torch.full((batch, width), pad, dtype=torch.long)
        mask = torch.zeros(batch, width, dtype=torch.long)
        for r, new in feeds.items():  # left-padded: each row's last column is its last new id
            ids[r, width - len(new) :] = torch.tensor(new)
            mask[r, width - len(new) :] = 1
        start = self.state.length
        rows = sorted(feeds)
        sub = self.state.forward_rows(torch.tensor(rows), ids, mask) if len(rows) < batch else None
        if sub is None:  # every row, or a cache that cannot be sliced by rows
            sub = self.state.forward(ids, mask)[rows]
        for r, logits in zip(rows, sub.to(self.logits.device), strict=True):
            new = feeds[r]
            self.slots[r] += range(start + width - len(new), start + width)
            self.cached[r] = self.cached[r] + new
            self.logits[r] = logits
            self.fresh[r] = True

    def _crop_dead_tail(self) -> None:
        """Crop trailing cache columns that no row uses any more (always the case with one row)."""
        alive = self.state.mask.any(dim=0).nonzero()
        keep = int(alive.max()) + 1 if len(alive) else 0
        self.state.crop(self.state.length - keep)


def utf8_prefix(data: bytes) -> bytes:
    """The longest prefix of ``data`` that ends on a character boundary."""
    for cut in range(len(data), max(len(data) - 4, -1), -1):
        try:
            data[:cut].decode("utf-8")
            return data[:cut]
        except UnicodeDecodeError:
            continue
    return b""


def utf8_possible(data: bytes) -> bool:
    """``data`` is UTF-8, or UTF-8 whose last character is not complete yet."""
    try:
        codecs.getincrementaldecoder("utf-8")().decode(data, final=False)
        return True
    except UnicodeDecodeError:
        return False
