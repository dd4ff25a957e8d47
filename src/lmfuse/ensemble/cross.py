"""The decode loop for members with different tokenizers, read top to bottom (a batch of prompts).

Each step: every needed member scores its next token from its own KV cache; per row, candidates are the
union of each member's top-k tokens, keyed by the bytes they decode to (plus a shared EOS); each member
scores every candidate (exact token, or its longest prefix that is a token, as UniTE does); the scores
are combined and one candidate's *bytes* are committed. Each member then advances by the tokens that text
becomes in its own vocabulary (``track.py``): one token when the new bytes are one of its tokens,
otherwise its own tokenization of the generated text; the cache rolls back to the first differing token
(crop) and the rest is fed in one chunk, never recomputing the prefix.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from lmfuse.ensemble.align import AlignmentReport, VocabMap, alignment_report
from lmfuse.ensemble.combine import COMBINE, next_tokens
from lmfuse.ensemble.decode import DecodeResult, SamplingOptions, cut_at_stop
from lmfuse.ensemble.member import Member
from lmfuse.ensemble.remote import call_all
from lmfuse.ensemble.track import Track, TrackBatch, utf8_possible, utf8_prefix

EOS = b""
"""The shared end-of-sequence candidate (no real token decodes to zero bytes)."""

__all__ = ["AlignmentReport", "Aligner", "CrossStep", "cross_steps", "decode_cross"]


@dataclass
class Choice:
    """One row's decision at one step: the candidates' combined log-probs and the pick."""

    cands: list[bytes]
    logp: torch.Tensor
    """(n_cands,) combined log-probs over the candidates (renormalised), before temperature."""
    pick: int


@dataclass
class CrossStep:
    """One step of a byte-aligned batch: per row the ``Choice`` made (``None``: row not live, or no
    member could continue its text)."""

    choices: list[Choice | None]


class Aligner:
    """The members' byte vocabularies, built once at load time."""

    def __init__(self, members: Sequence[Member]) -> None:
        self.members = list(members)
        self.maps = [VocabMap.of(m) for m in self.members]
        self.report = alignment_report(self.members, self.maps)


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
            if b and len(b) > len(lag) and b.startswith(lag) and utf8_possible(text + b[len(lag) :]):
                seen.setdefault(b[len(lag) :])
    return list(seen)


def _member_scores(t: Track, lp: torch.Tensor, cands: list[bytes], text: bytes) -> torch.Tensor:
    """(n_cands + 1,) log-probs of each candidate for this member, then the log of the mass of the tokens
    no candidate uses (so that combining sees each member's real probabilities, not ones renormalised
    over the candidates). Candidates that share a longest-prefix token each get its full probability."""
    lag = text[t.consumed :]
    eos = sorted(i for i in t.member.eos_ids if i < lp.shape[-1])
    idx = [-1 if c == EOS else t.vmap.longest_prefix(lag + c, longer_than=len(lag)) for c in cands]
    found = torch.tensor([i is not None and i >= 0 for i in idx], device=lp.device)
    picked = lp[torch.tensor([i if i is not None and i >= 0 else 0 for i in idx], device=lp.device)]
    out = torch.full((len(cands) + 1,), float("-inf"), device=lp.device)
    out[:-1] = torch.where(found, picked, out[:-1])
    if EOS in cands and eos:
        out[cands.index(EOS)] = torch.logsumexp(lp[eos], 0)
    used = sorted({i for i in idx if i is not None and i >= 0} | (set(eos) if EOS in cands else set()))
    mass = lp[used].exp().sum().clamp(max=1.0) if used else torch.zeros((), device=lp.device)
    out[-1] = torch.log1p(-mass) if mass < 1 else float("-inf")
    return out


def decode_cross(
    aligner: Aligner,
    weights: Sequence[float],
    combine: str,
    prompts: Sequence[Sequence[list[int]]],
    options: SamplingOptions,
    union_top_k: int = 10,
    gate: float | None = None,
    device: torch.device | None = None,
) -> tuple[list[str], DecodeResult]:
    """Decode a batch: ``prompts[r][m]`` is row r's prompt ids for member m. Returns the completions."""
    result = DecodeResult(torch.empty(len(prompts), 0, dtype=torch.long), ["length"] * len(prompts))
    texts = [b""] * len(prompts)
    for step in cross_steps(aligner, weights, combine, prompts, options, result, union_top_k, gate, device):
        for r, c in enumerate(step.choices):
            if c is not None and c.cands[c.pick] != EOS:
                texts[r] += c.cands[c.pick]
    # an unfinished last character (max_new_tokens reached mid-character) is dropped
    return [cut_at_stop(utf8_prefix(t).decode("utf-8"), options.stop) for t in texts], result


def cross_steps(
    aligner: Aligner,
    weights: Sequence[float],
    combine: str,
    prompts: Sequence[Sequence[list[int]]],
    options: SamplingOptions,
    result: DecodeResult,
    union_top_k: int = 10,
    gate: float | None = None,
    device: torch.device | None = None,
) -> Iterator[CrossStep]:
    """``decode_cross`` one step at a time; ``result`` gets the counts and each row's reason."""
    device = device or aligner.members[0].device
    batches = [
        TrackBatch(m, vm, [list(p[i]) for p in prompts], device)
        for i, (m, vm) in enumerate(zip(aligner.members, aligner.maps, strict=True))
    ]
    generator = None
    if options.seed is not None and options.temperature > 0:
        generator = torch.Generator(device=device).manual_seed(options.seed)
    texts = [b""] * len(prompts)
    active = list(range(len(prompts)))
    for step in range(options.max_new_tokens):
        lead_lp = torch.log_softmax(batches[0].sync(active), -1)  # (batch, vocab)
        need = [r for r in active if gate is None or float(lead_lp[r].max().exp()) < gate]
        # the other members catch up (roll back + one chunk) only for rows the gate sends to all
        lps = [lead_lp] + _sync_all(batches[1:], need) if need else [lead_lp]
        result.ensembled += len(need)
        result.row_steps += len(active)
        result.steps = step + 1
        choices: list[Choice | None] = [None] * len(prompts)
        for r in active:
            use = [i for i, lp in enumerate(lps) if lp is not None] if r in need else [0]
            tracks = [batches[i].tracks[r] for i in use]
            logps = [lps[i][r] for i in use]
            w = [weights[i] / sum(weights[j] for j in use) for i in use] if r in need else [1.0]
            choices[r] = _choose(tracks, logps, w, texts[r], combine, options, union_top_k, generator)
            choice = choices[r].cands[choices[r].pick] if choices[r] else None
            if choice is None or choice == EOS:  # None: no member can continue the committed bytes
                result.finished_by[r] = "eos"
                continue
            texts[r] += choice
            for b in batches:
                b.tracks[r].advance(texts[r])
            if options.stop and any(s in texts[r].decode("utf-8", "ignore") for s in options.stop):
                result.finished_by[r] = "stop"
        active = [r for r in active if result.finished_by[r] == "length"]
        yield CrossStep(choices)
        if not active:
            break


def _sync_all(batches: Sequence[TrackBatch], rows: list[int]) -> list[torch.Tensor | None]:
    """The other members' (batch, vocab) log-probs for ``rows`` (remote members concurrently; ``None``
    for a dropped one)."""
    calls = [lambda b=b: torch.log_softmax(b.sync(rows), -1) for b in batches]
    return call_all(calls, parallel=any(hasattr(b.member, "base_url") for b in batches))


def _choose(
    tracks: list[Track],
    logps: list[torch.Tensor],
    weights: Sequence[float],
    text: bytes,
    combine: str,
    options: SamplingOptions,
    union_top_k: int,
    generator: torch.Generator | None,
) -> Choice | None:
    """One row's next bytes (or ``EOS``) from its members' (vocab,) log-probs; ``None`` if no candidate."""
    cands = _candidates(tracks, logps, text, union_top_k, with_eos=not options.ignore_eos)
    if not cands:
        return None
    scores = [_member_scores(t, lp, cands, text) for t, lp in zip(tracks, logps, strict=True)]
    mixed = torch.log_softmax(COMBINE[combine](scores, weights)[:-1], -1)[None]  # (1, n_cands)
    pick = next_tokens(mixed, options.temperature, options.top_k, options.top_p, generator)
    return Choice(cands, mixed[0], int(pick[0]))
