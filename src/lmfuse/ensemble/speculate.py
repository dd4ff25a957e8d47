"""Speculative ensembling (members that share a tokenizer), read top to bottom.

Each round, for every row: the lead member drafts ``k`` tokens from its own distribution (``k`` one-token
forwards, or one call for a remote lead); every other member reads the round's pending token and the
first ``k - 1`` drafts in one forward, which gives its distribution at all ``k`` drafted positions; the
members' distributions are combined position by position, exactly as the plain ensemble combines them.

Acceptance, position by position, stops at the first position the ensemble would not have produced:
- greedy: the draft is kept while it is the combined distribution's argmax; at the first position where
  it is not, the argmax is committed instead (so the tokens equal the plain ensemble's);
- sampling (speculative sampling, Leviathan et al. 2023; Chen et al. 2023): with ``p`` the processed
  combined distribution (temperature, top-k, top-p) and ``q`` the lead's processed distribution that the
  draft was sampled from, draft ``d`` is kept with probability ``min(1, p(d) / q(d))``; on rejection a
  token is sampled from ``max(0, p - q)`` renormalised. Every committed token is then distributed exactly
  as the plain ensemble's.

A round commits 1..k tokens per row (rows differ). Every member has read the same drafts, so each row
drops its rejected tail: those cache columns are masked out (positions follow the mask), and columns no
row uses are cropped (``DynamicCache.crop``); nothing is recomputed. With ``adaptive``, ``k`` grows by
one after a round where every live row kept all drafts and shrinks to the mean accepted length + 1
otherwise (between 1 and the given ``k``).

Members are used through their decoding state (``Member.open(batch)``): ``forward(ids, mask,
all_logits=True)`` → (batch, n, vocab) scores and ``drop(n)`` (batch,) → forget each row's last n tokens;
a state may offer ``draft(ids, mask, k, pick)`` to draft in one call (remote members).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch

from lmfuse.ensemble.combine import COMBINE, apply_temperature, apply_top_k, apply_top_p
from lmfuse.ensemble.decode import DecodeResult, SamplingOptions, Step, combine_alive
from lmfuse.ensemble.remote import call_all

Pick = Callable[[torch.Tensor], torch.Tensor]
"""(batch, vocab) processed log-probs → (batch,) drafted ids."""


def speculative_steps(
    members: Sequence,
    weights: Sequence[float],
    combine: str,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    options: SamplingOptions,
    result: DecodeResult,
    k: int,
    adaptive: bool = False,
    device: torch.device | None = None,
) -> Iterator[Step]:
    """Like ``decode.shared_steps`` (one ``Step`` per committed position), with rounds of ``k`` drafts."""
    device = device or input_ids.device
    generator = None
    if options.seed is not None and options.temperature > 0:
        generator = torch.Generator(device=device).manual_seed(options.seed)
    batch, k_max = input_ids.shape[0], k
    pad_id = members[0].tokenizer.pad_token_id
    states = [m.open(batch) for m in members]
    pending = (input_ids.to(device), attention_mask.to(device))
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    counts = [0] * batch
    texts: list[list[int]] = [[] for _ in range(batch)]
    while not bool(done.all()):
        k = min(k, options.max_new_tokens - min(counts[r] for r in range(batch) if not done[r]))
        eos = set() if options.ignore_eos else members[0].eos_ids
        draft, q = _draft(states[0], pending, k, options, generator, eos, done)
        scores = [q] + _verify_all(states[1:], pending, draft, device)
        mixed = combine_alive(COMBINE[combine], scores, weights)  # (batch, k, vocab), before temperature
        n, token = _accept(mixed, q, draft, options, generator)
        committed = torch.cat([draft, token[:, None]], 1)  # row r commits committed[r, n_r - 1] last
        committed.scatter_(1, (n - 1)[:, None], token[:, None])
        for s in states:  # (a dropped member's state is never read again)
            s.drop(draft.shape[1] - n)  # every member read the k - 1 drafts: forget each row's rejected ones
        live_rows = (~done).nonzero().flatten().tolist()
        result.speculations += len(live_rows)  # mean accepted length: row_steps / speculations
        for i in range(int(n.max())):
            live = ~done & (n > i)
            yield Step(torch.where(live, committed[:, i], pad_id), mixed[:, i], live)
            _commit(members[0], committed[:, i], live, done, counts, texts, result, options)
        pending = (token[:, None].to(device), torch.ones(batch, 1, dtype=torch.long, device=device))
        if adaptive:
            kept = n[live_rows].float().mean().item() if live_rows else k
            k = min(k_max, k + 1) if kept >= k else max(1, int(kept) + 1)
        k = max(k, 1)


def _process(logp: torch.Tensor, options: SamplingOptions) -> torch.Tensor:
    """Temperature, top-k and top-p on (..., vocab) log-probs, as ``combine.next_tokens`` applies them."""
    return apply_top_p(
        apply_top_k(apply_temperature(logp, options.temperature), options.top_k), options.top_p
    )


def _draft(state, pending, k: int, options: SamplingOptions, generator, eos: set[int], done: torch.Tensor):
    """The lead's drafted ids (batch, k') and its log-probs at each drafted position (batch, k', vocab):
    ``k' = k``, or fewer once every live row has drafted an EOS (nothing after it can be committed)."""

    def pick(logp: torch.Tensor) -> torch.Tensor:
        if options.temperature <= 0:
            return logp.argmax(-1)
        return torch.multinomial(_process(logp, options).softmax(-1), 1, generator=generator).squeeze(-1)

    pick.greedy = options.temperature <= 0
    if hasattr(state, "draft"):
        return state.draft(*pending, k, pick)
    ids, mask = pending
    drafts, logps = [], []
    ended = done.clone()
    stop = torch.tensor(sorted(eos), dtype=torch.long, device=done.device)
    for _ in range(k):
        logp = torch.log_softmax(state.forward(ids, mask, all_logits=True)[:, -1].float(), -1).to(ids.device)
        drafts.append(pick(logp))
        logps.append(logp)
        ended |= torch.isin(drafts[-1].to(done.device), stop)
        if bool(ended.all()):
            break
        ids = drafts[-1][:, None]
        mask = torch.ones_like(ids)
    # the lead has read the pending ids and drafts 1..k-1, as the verifiers will
    return torch.stack(drafts, 1), torch.stack(logps, 1)


def _verify_all(states, pending, draft: torch.Tensor, device) -> list[torch.Tensor | None]:
    """The verifiers' log-probs at the drafted positions (remote members at the same time)."""
    calls = [lambda s=s: _verify(s, pending, draft, device) for s in states]
    return call_all(calls, parallel=any(hasattr(s.member, "base_url") for s in states))


def _verify(state, pending, draft: torch.Tensor, device) -> torch.Tensor:
    """Another member's log-probs at the ``k`` drafted positions: one forward of the pending ids and
    the first k - 1 drafts."""
    ids, mask = pending
    k = draft.shape[1]
    ids = torch.cat([ids, draft[:, : k - 1]], 1)
    mask = torch.cat([mask, torch.ones_like(draft[:, : k - 1])], 1)
    logits = state.forward(ids, mask, all_logits=True)[:, -k:]
    return torch.log_softmax(logits.float(), -1).to(device)


def _accept(mixed, q, draft, options: SamplingOptions, generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, how many positions are committed (1..k) and the token committed at the last of them."""
    batch, k = draft.shape
    if options.temperature <= 0:
        best = mixed.argmax(-1)  # (batch, k)
        ok = best == draft
        p = None
    else:
        p = _process(mixed, options).softmax(-1)
        q = _process(q, options).softmax(-1)
        pd = p.gather(-1, draft[..., None]).squeeze(-1)
        qd = q.gather(-1, draft[..., None]).squeeze(-1)
        u = torch.rand(batch, k, generator=generator, device=draft.device)
        ok = u * qd < pd  # u < p(d) / q(d), without dividing
    # the first rejected position (k - 1 when every draft is kept: its token is the draft, already right)
    first = torch.where(ok.all(1), k - 1, (~ok).int().argmax(1))
    n = first + 1
    rows = torch.arange(batch, device=draft.device)
    if p is None:
        return n, best[rows, first]
    token = draft[rows, first].clone()
    rejected = ~ok[rows, first]
    if bool(rejected.any()):
        residual = (p[rows, first] - q[rows, first]).clamp(min=0)[rejected]
        empty = residual.sum(-1, keepdim=True) <= 0  # p == q there: the residual is p itself
        residual = torch.where(empty, p[rows, first][rejected], residual)
        token[rejected] = torch.multinomial(residual, 1, generator=generator).squeeze(-1)
    return n, token


def _commit(lead, token, live, done, counts, texts, result: DecodeResult, options: SamplingOptions) -> None:
    """Count one committed position of the live rows: EOS, stop strings and the token limit end a row."""
    for r in live.nonzero().flatten().tolist():
        t = int(token[r])
        counts[r] += 1
        result.row_steps += 1
        result.ensembled += 1
        if not options.ignore_eos and t in lead.eos_ids:
            result.finished_by[r], done[r] = "eos", True
            continue
        texts[r].append(t)
        if options.stop:
            text = lead.tokenizer.decode(texts[r], skip_special_tokens=True)
            if any(s in text for s in options.stop):
                result.finished_by[r], done[r] = "stop", True
        if counts[r] >= options.max_new_tokens:
            done[r] = True
    result.steps += 1
