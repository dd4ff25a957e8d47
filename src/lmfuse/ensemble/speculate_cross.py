"""Speculative ensembling over byte-aligned members (different tokenizers), read top to bottom.

Each round, per row: the lead drafts up to ``k`` tokens greedily in its own vocabulary, one cached
forward each, following its draft as text exactly as it follows committed text (``Track.advance``), so
its distribution at every drafted position is the one the plain path would see. Every other member
follows the draft's text on a copy of its ``Track``: the ids it would hold before each drafted position
form a chain (each a prefix of the next, the common case), scored in one forward
(``TrackBatch.score_chain``); where its own tokenization of the draft rewrites earlier ids, the chain
(and the round's verifiable positions) ends there.

At each drafted position the candidates, their scores and the combined distribution are computed
exactly as the plain byte-aligned step computes them (``cross.combined``). Greedy: the draft is kept
while it is the combined argmax; at the first position where it is not, the combined choice is
committed and the round ends, so the text equals the plain ensemble's. Sampling (speculative sampling
over byte strings): the lead samples its token from its processed distribution ``q`` (temperature,
top-k, top-p); the outcome is the bytes the token adds (or ``EOS``; no outcome for a token that is not
a candidate, e.g. a special token). With ``p`` the processed combined distribution over the position's
candidates and ``q_C(c)`` the lead's mass on the tokens that add the bytes ``c``, the draft ``d`` is kept
with probability ``min(1, p(d) / q_C(d))`` (0 when it is not a candidate); on rejection a candidate is
sampled from ``max(0, p - q_C)`` renormalised. Every committed step is then distributed as the plain
byte-aligned ensemble's.

Nothing is recomputed: the next round's ``sync`` rolls each member's cache back to the accepted prefix
(masked slots, dead tail cropped) and feeds only what differs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace

import torch

from lmfuse.ensemble.cross import EOS, Aligner, Choice, CrossStep, combined
from lmfuse.ensemble.decode import DecodeResult, SamplingOptions
from lmfuse.ensemble.remote import MemberDropped, call_all
from lmfuse.ensemble.speculate import _process
from lmfuse.ensemble.track import Track, TrackBatch, utf8_possible


def speculative_cross_steps(
    aligner: Aligner,
    weights: Sequence[float],
    combine: str,
    prompts: Sequence[Sequence[list[int]]],
    options: SamplingOptions,
    result: DecodeResult,
    union_top_k: int,
    k: int,
    adaptive: bool = False,
    device: torch.device | None = None,
) -> Iterator[CrossStep]:
    """Like ``cross.cross_steps`` (one ``CrossStep`` per committed position), with rounds of ``k``
    drafts; rows commit 1..k positions per round."""
    device = device or aligner.members[0].device
    generator = None
    if options.seed is not None and options.temperature > 0:
        generator = torch.Generator(device=device).manual_seed(options.seed)
    batches = [
        TrackBatch(m, vm, [list(p[i]) for p in prompts], device)
        for i, (m, vm) in enumerate(zip(aligner.members, aligner.maps, strict=True))
    ]
    texts = [b""] * len(prompts)
    counts = [0] * len(prompts)
    active = list(range(len(prompts)))
    k_max = k
    while active:
        limit = {r: min(k, options.max_new_tokens - counts[r]) for r in active}
        drafts, lead_lps, lead_tracks = _draft(batches[0], active, texts, limit, options, generator)
        others = _verify_all(
            batches[1:], active, texts, {r: drafts[r][: len(lead_lps[r]) - 1] for r in active}
        )
        picks = {r: _decide(r, drafts[r], lead_lps, lead_tracks, others, weights, texts[r], combine,
                            options, union_top_k, generator) for r in active}  # fmt: skip
        result.speculations += len(active)
        for i in range(max(len(p) for p in picks.values())):
            choices: list[Choice | None] = [None] * len(prompts)
            for r in [r for r in active if len(picks[r]) > i]:
                choices[r] = picks[r][i]
                _commit(r, choices[r], batches, texts, counts, result, options)
            result.steps += 1
            active = [
                r for r in active if result.finished_by[r] == "length" and counts[r] < options.max_new_tokens
            ]
            yield CrossStep(choices)
        if adaptive:
            kept = sum(len(p) for p in picks.values()) / len(picks)
            k = min(k_max, k + 1) if kept >= k else max(1, int(kept) + 1)


def _draft(lead: TrackBatch, rows: list[int], texts: list[bytes], limit: dict[int, int], options, generator):
    """The lead's drafts per row (candidate bytes, or ``EOS``), its (vocab,) log-probs before each
    drafted position and its ``Track`` there (copies: the real tracks follow committed text only)."""
    sims = {r: _copy(lead.tracks[r]) for r in rows}
    text = {r: texts[r] for r in rows}
    drafts: dict[int, list[bytes]] = {r: [] for r in rows}
    lps: dict[int, list[torch.Tensor]] = {r: [] for r in rows}
    tracks: dict[int, list[Track]] = {r: [] for r in rows}
    going = list(rows)
    while going:
        logp = torch.log_softmax(lead.sync(going, {r: sims[r].want for r in going}), -1)
        for r in list(going):
            lps[r].append(logp[r].clone())
            tracks[r].append(_copy(sims[r]))
            if options.temperature > 0:
                q = _process(logp[r], options).softmax(-1)
                d = _outcome(sims[r], int(torch.multinomial(q, 1, generator=generator)), text[r], options)
            else:
                d = _best(sims[r], logp[r], text[r], options)
            if d is not None:
                drafts[r].append(d)
            if d is None or d == EOS or len(drafts[r]) >= limit[r]:
                going.remove(r)  # a position with no draft is still scored: the combined choice commits
                continue
            text[r] += d
            sims[r].advance(text[r])
    return drafts, lps, tracks


def _best(track: Track, logp: torch.Tensor, text: bytes, options: SamplingOptions) -> bytes | None:
    """The lead's most likely next token that is a candidate (its new bytes, or ``EOS``); ``None`` if
    none of its top 16 is."""
    for idx in torch.topk(logp, min(16, logp.shape[-1])).indices.tolist():
        d = _outcome(track, idx, text, options)
        if d is not None:
            return d
    return None


def _outcome(track: Track, idx: int, text: bytes, options: SamplingOptions) -> bytes | None:
    """The bytes lead token ``idx`` adds to ``text`` (``EOS`` for an EOS id), as ``cross._candidates``
    reads it; ``None`` when it cannot be a candidate."""
    if idx in track.member.eos_ids:
        return None if options.ignore_eos else EOS
    lag = text[track.consumed :]
    b = track.vmap.token_bytes[idx]
    if b and len(b) > len(lag) and b.startswith(lag) and utf8_possible(text + b[len(lag) :]):
        return b[len(lag) :]
    return None


def _verify_all(batches: Sequence[TrackBatch], rows, texts, drafts) -> list:
    """Per other member: {row: [(Track, (vocab,) log-probs) before each verifiable drafted position]}
    (``None`` for a dropped remote member); remote members at the same time. ``drafts[r]``: the drafts
    before row r's last drafted position."""

    def one(b: TrackBatch):
        try:
            return _verify(b, rows, texts, drafts)
        except MemberDropped:
            return None

    calls = [lambda b=b: one(b) for b in batches]
    return call_all(calls, parallel=any(hasattr(b.member, "base_url") for b in batches))


def _verify(batch: TrackBatch, rows, texts, drafts) -> dict[int, list[tuple[Track, torch.Tensor]]]:
    chains, tracks = {}, {}
    for r in rows:
        sim, text, seq = _copy(batch.tracks[r]), texts[r], [_copy(batch.tracks[r])]
        for d in drafts[r]:  # the drafts before the last drafted position
            text += d
            sim.advance(text)
            if sim.want[: len(seq[-1].want)] != seq[-1].want:
                break  # its ids rewrite earlier ones: the chain (verifiable positions) ends here
            seq.append(_copy(sim))
        tracks[r] = seq
        chains[r] = (seq[-1].want, [len(t.want) for t in seq])
    scored = batch.score_chain(chains)
    return {
        r: [(t, torch.log_softmax(x, -1)) for t, x in zip(tracks[r], scored[r], strict=True)] for r in rows
    }


def _decide(r, draft, lead_lps, lead_tracks, others, weights, text, combine, options, union_top_k, generator):
    """Row ``r``'s committed choices this round: kept drafts, then the combined choice where the draft
    is rejected (or the last verifiable position)."""
    alive = [i for i, o in enumerate([True] + others) if o is not None]
    views = [o[r] for o in others if o is not None]
    n = min([len(lead_lps[r])] + [len(v) for v in views])
    w = [weights[i] / sum(weights[j] for j in alive) for i in alive]
    out: list[Choice | None] = []
    for j in range(n):
        tracks = [lead_tracks[r][j]] + [v[j][0] for v in views]
        logps = [lead_lps[r][j]] + [v[j][1] for v in views]
        scored = combined(tracks, logps, w, text, combine, options, union_top_k)
        if scored is None:  # no member can continue the text: the row ends, as in the plain step
            out.append(None)
            break
        d = draft[j] if j < len(draft) else None
        pick, kept = _pick(scored, d, tracks[0], lead_lps[r][j], text, options, generator)
        out.append(Choice(scored[0], scored[1], pick))
        if not kept or d == EOS:
            break
        text += d
    return out


def _pick(scored, d, lead: Track, lead_lp, text: bytes, options: SamplingOptions, generator):
    """The candidate committed at one drafted position and whether it is the draft ``d``."""
    cands, mixed = scored
    if options.temperature <= 0:
        best = int(mixed.argmax())
        return best, cands[best] == d
    p = _process(mixed, options).softmax(-1)
    q = _lead_mass(lead, _process(lead_lp, options).softmax(-1), cands, text)
    if d in cands:
        i = cands.index(d)
        if float(torch.rand((), generator=generator, device=p.device)) * float(q[i]) < float(p[i]):
            return i, True
    residual = (p - q).clamp(min=0)
    if float(residual.sum()) <= 0:  # p == q_C: rejection cannot happen but for rounding
        residual = p
    return int(torch.multinomial(residual, 1, generator=generator)), False


def _lead_mass(lead: Track, q: torch.Tensor, cands: list[bytes], text: bytes) -> torch.Tensor:
    """(n_cands,) the lead's probability of proposing each candidate: the mass of its tokens that add
    exactly those bytes to ``text`` (every EOS id for ``EOS``)."""
    lag = text[lead.consumed :]
    by_bytes = lead.vmap.all_ids
    eos = sorted(i for i in lead.member.eos_ids if i < q.shape[-1])
    out = torch.zeros(len(cands), device=q.device)
    for i, c in enumerate(cands):
        ids = eos if c == EOS else by_bytes.get(lag + c, [])
        if ids:
            out[i] = q[ids].sum()
    return out


def _commit(r, choice, batches, texts, counts, result: DecodeResult, options: SamplingOptions) -> None:
    """Commit one row's choice as the plain step does: text, every member's track, EOS and stop."""
    counts[r] += 1
    result.row_steps += 1
    result.ensembled += 1
    picked = choice.cands[choice.pick] if choice else None
    if picked is None or picked == EOS:
        result.finished_by[r] = "eos"
        return
    texts[r] += picked
    for b in batches:
        b.tracks[r].advance(texts[r])
    if options.stop and any(s in texts[r].decode("utf-8", "ignore") for s in options.stop):
        result.finished_by[r] = "stop"


def _copy(track: Track) -> Track:
    return replace(track, gen=list(track.gen))
