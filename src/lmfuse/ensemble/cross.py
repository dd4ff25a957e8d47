"""The decode loop for members with different tokenizers, read top to bottom (one prompt at a time).

Each step: every needed member scores its next token from its own KV cache; candidates are the union of
each member's top-k tokens, keyed by the bytes they decode to (plus a shared EOS); each member scores
every candidate (exact token, or its longest prefix that is a token); the scores are combined and one
candidate's *bytes* are committed. Each member then advances by the tokens that text becomes in its own
vocabulary: one token when the new bytes are one of its tokens, otherwise the generated text is
re-tokenized, the cache is cropped back to the first differing token and the rest is fed in one chunk.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from lmfuse.ensemble.align import AlignmentReport, VocabMap, alignment_report
from lmfuse.ensemble.combine import COMBINE, next_tokens
from lmfuse.ensemble.decode import DecodeResult, SamplingOptions, cut_at_stop
from lmfuse.ensemble.member import Member, MemberState

EOS = b""
"""The shared end-of-sequence candidate (no real token decodes to zero bytes)."""

__all__ = ["AlignmentReport", "Aligner", "decode_cross"]


class Aligner:
    """The members' byte vocabularies, built once at load time."""

    def __init__(self, members: Sequence[Member]) -> None:
        self.members = list(members)
        self.maps = [VocabMap.of(m) for m in self.members]
        self.report = alignment_report(self.members, self.maps)


@dataclass
class Track:
    """One member following the committed text: the ids it should have and the ids its cache holds."""

    member: Member
    vmap: VocabMap
    state: MemberState
    prompt: list[int]
    gen: list[int] = field(default_factory=list)
    """Ids of the committed bytes ``[:consumed]`` in this member's vocabulary."""
    consumed: int = 0
    cached: list[int] = field(default_factory=list)
    logits: torch.Tensor | None = None
    """(vocab,) next-token logits after ``cached``; ``None`` when stale."""

    def advance(self, text: bytes) -> None:
        """Follow committed bytes ``text``; only ids change here, the model runs in ``sync``."""
        lag = text[self.consumed :]
        if not lag:
            return
        one = self.vmap.ids.get(lag)
        if one is not None:  # the common case: the new bytes are one of this member's tokens
            self.gen.append(one)
            self.consumed = len(text)
            return
        valid = _utf8_prefix(text)
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

    def sync(self, device: torch.device) -> torch.Tensor:
        """Bring the cache to ``prompt + gen`` (crop back to the first difference, feed the rest in one
        chunk) and return the (vocab,) next-token logits on ``device``."""
        want = self.prompt + self.gen
        same = 0
        for a, b in zip(self.cached, want, strict=False):
            if a != b:
                break
            same += 1
        if same == len(want) == len(self.cached) and self.logits is not None:
            return self.logits
        same = min(same, len(want) - 1)  # at least one token must be fed to get logits
        self.state.crop(len(self.cached) - same)
        chunk = torch.tensor([want[same:]], dtype=torch.long)
        self.logits = self.state.forward(chunk)[0].to(device)
        self.cached = want
        return self.logits


def _utf8_prefix(data: bytes) -> bytes:
    """The longest prefix of ``data`` that ends on a character boundary."""
    for cut in range(len(data), max(len(data) - 4, -1), -1):
        try:
            data[:cut].decode("utf-8")
            return data[:cut]
        except UnicodeDecodeError:
            continue
    return b""


def _utf8_possible(data: bytes) -> bool:
    """``data`` is UTF-8, or UTF-8 whose last character is not complete yet."""
    try:
        codecs.getincrementaldecoder("utf-8")().decode(data, final=False)
        return True
    except UnicodeDecodeError:
        return False


def _candidates(
    tracks: Sequence[Track], logps: Sequence[torch.Tensor | None], text: bytes, k: int, with_eos: bool = True
) -> list[bytes]:
    """Union of the members' top-k next tokens as the bytes they add to ``text`` (EOS as ``EOS``);
    tokens that would make the text invalid UTF-8 are left out, so the output is always valid text."""
    seen: dict[bytes, None] = {}
    for t, lp in zip(tracks, logps, strict=True):
        if lp is None:
            continue
        lag = text[t.consumed :]
        top = range(lp.shape[-1]) if k == 0 else torch.topk(lp, min(k, lp.shape[-1])).indices.tolist()
        for idx in top:
            if idx in t.member.eos_ids:
                if with_eos:
                    seen.setdefault(EOS)
                continue
            b = t.vmap.token_bytes[idx]
            if b and len(b) > len(lag) and b.startswith(lag) and _utf8_possible(text + b[len(lag) :]):
                seen.setdefault(b[len(lag) :])
    return list(seen)


def _member_scores(t: Track, lp: torch.Tensor, cands: list[bytes], text: bytes) -> torch.Tensor:
    """(n_cands + 1,) log-probs of each candidate for this member, then the log of the mass left over
    (so that combining sees each member's real probabilities, not ones renormalised over candidates)."""
    lag = text[t.consumed :]
    eos = sorted(i for i in t.member.eos_ids if i < lp.shape[-1])
    idx = [-1 if c == EOS else t.vmap.longest_prefix(lag + c, longer_than=len(lag)) for c in cands]
    found = torch.tensor([i is not None and i >= 0 for i in idx], device=lp.device)
    picked = lp[torch.tensor([i if i is not None and i >= 0 else 0 for i in idx], device=lp.device)]
    out = torch.full((len(cands) + 1,), float("-inf"), device=lp.device)
    out[:-1] = torch.where(found, picked, out[:-1])
    if EOS in cands and eos:
        out[cands.index(EOS)] = torch.logsumexp(lp[eos], 0)
    mass = out[:-1].exp().sum().clamp(max=1.0)
    out[-1] = torch.log1p(-mass) if mass < 1 else float("-inf")
    return out


def decode_cross(
    aligner: Aligner,
    weights: Sequence[float],
    combine: str,
    prompts: Sequence[str],
    options: SamplingOptions,
    union_top_k: int = 10,
    gate: float | None = None,
    device: torch.device | None = None,
) -> tuple[str, DecodeResult]:
    """Decode one prompt (``prompts[m]`` is its text for member m) and return the completion."""
    device = device or aligner.members[0].device
    tracks = [
        Track(m, vm, MemberState(m, 1), m.tokenizer(p)["input_ids"])
        for m, vm, p in zip(aligner.members, aligner.maps, prompts, strict=True)
    ]
    generator = None
    if options.seed is not None and options.temperature > 0:
        generator = torch.Generator(device=device).manual_seed(options.seed)
    text = b""
    result = DecodeResult(torch.empty(1, 0, dtype=torch.long), ["length"])
    for step in range(options.max_new_tokens):
        lead_lp = torch.log_softmax(tracks[0].sync(device), -1)  # (vocab,)
        use, logps, w = tracks[:1], [lead_lp], [1.0]
        if gate is None or float(lead_lp.max().exp()) < gate:  # the others catch up and score too
            use, w = tracks, weights
            logps += [torch.log_softmax(t.sync(device), -1) for t in tracks[1:]]
            result.ensembled += 1
        result.row_steps += 1
        result.steps = step + 1
        cands = _candidates(use, logps, text, union_top_k, with_eos=not options.ignore_eos)
        if not cands:
            result.finished_by = ["eos"]  # no member can continue the committed bytes
            break
        scores = [_member_scores(t, lp, cands, text) for t, lp in zip(use, logps, strict=True)]
        mixed = torch.log_softmax(COMBINE[combine](scores, w)[:-1], -1)[None]  # (1, n_cands)
        choice = cands[
            int(next_tokens(mixed, options.temperature, options.top_k, options.top_p, generator)[0])
        ]
        if choice == EOS:
            result.finished_by = ["eos"]
            break
        text += choice
        for t in tracks:
            t.advance(text)
        if options.stop and any(s in text.decode("utf-8", "ignore") for s in options.stop):
            result.finished_by = ["stop"]
            break
    # an unfinished last character (max_new_tokens reached mid-character) is dropped
    return cut_at_stop(_utf8_prefix(text).decode("utf-8"), options.stop), result
