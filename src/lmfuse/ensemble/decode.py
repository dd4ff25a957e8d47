"""The decode loop for members that share a tokenizer, read top to bottom.

Every step: the lead member (member 0) scores the next token from its KV cache; for the rows the selective
gate does not find it confident on (all rows without a gate), the other members first catch up on the
tokens they skipped (one chunked forward each, on that sub-batch of rows) and score too; the scores are
combined, the combined distribution is processed (temperature, top-k, top-p) and one token per row is
committed to all members. A row stops on an EOS id of the lead member or when a stop string appears in
its text.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch

from lmfuse.ensemble.combine import COMBINE, next_tokens
from lmfuse.ensemble.member import Member, MemberState
from lmfuse.ensemble.remote import MemberDropped, call_all


@dataclass
class SamplingOptions:
    """How tokens are chosen from the combined distribution."""

    max_new_tokens: int = 32
    temperature: float = 0.0
    """0 = greedy (argmax)."""
    top_k: int = 0
    """0 = off."""
    top_p: float = 1.0
    """1 = off."""
    stop: list[str] = field(default_factory=list)
    """A row stops when its generated text contains one of these (the text is cut before it)."""
    seed: int | None = None
    ignore_eos: bool = False
    """Decode ``max_new_tokens`` whatever is sampled (for benchmarks)."""


@dataclass
class DecodeResult:
    """New tokens of a batch and what the gate did."""

    tokens: torch.Tensor
    """(batch, steps) committed ids; rows that stopped early are filled with the pad id."""
    finished_by: list[str]
    """Per row: ``eos``, ``stop`` or ``length``."""
    steps: int = 0
    ensembled: int = 0
    """Row-steps decided by the full ensemble (the rest by the confident lead member alone)."""
    row_steps: int = 0
    speculations: int = 0
    """Speculation: rounds summed over rows (mean accepted length = row_steps / speculations)."""


@dataclass
class Step:
    """One committed step of a batch (what ``shared_steps`` yields)."""

    tokens: torch.Tensor
    """(batch,) committed ids; the pad id for rows that had already finished."""
    logp: torch.Tensor
    """(batch, vocab) the combined log-probs the tokens were chosen from, before temperature."""
    live: torch.Tensor
    """(batch,) bool: the rows that committed a token at this step."""


def decode_shared(
    members: Sequence[Member],
    weights: Sequence[float],
    combine: str,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    options: SamplingOptions,
    gate: float | None = None,
    device: torch.device | None = None,
) -> DecodeResult:
    """Decode a left-padded batch ``input_ids`` (batch, prompt) with ``attention_mask`` (batch, prompt).

    ``gate``: when set, a row whose lead-member top probability is at least ``gate`` takes the lead's
    token distribution alone; other members run only when some row needs them. Logits are combined on
    ``device`` (default: the lead member's)."""
    batch = input_ids.shape[0]
    result = DecodeResult(torch.empty(batch, 0, dtype=torch.long), ["length"] * batch)
    steps = [
        s.tokens
        for s in shared_steps(
            members, weights, combine, input_ids, attention_mask, options, result, gate, device
        )
    ]
    if steps:
        result.tokens = torch.stack(steps, dim=1)
    return result


def shared_steps(
    members: Sequence[Member],
    weights: Sequence[float],
    combine: str,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    options: SamplingOptions,
    result: DecodeResult,
    gate: float | None = None,
    device: torch.device | None = None,
) -> Iterator[Step]:
    """``decode_shared`` one committed step at a time; ``result`` gets the counts and row reasons."""
    device = device or members[0].device
    combine_fn = COMBINE[combine]
    lead_tok = members[0].tokenizer
    pad_id = lead_tok.pad_token_id
    eos = torch.tensor(
        [] if options.ignore_eos else sorted(members[0].eos_ids), dtype=torch.long, device=device
    )
    generator = None
    if options.seed is not None and options.temperature > 0:
        generator = torch.Generator(device=device).manual_seed(options.seed)

    batch = input_ids.shape[0]
    states = [m.open(batch) for m in members]
    # Tokens each member has not yet read, with their mask: at first the whole prompt.
    pending = [(input_ids, attention_mask) for _ in members]
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    reason = result.finished_by
    out: list[torch.Tensor] = []

    for step in range(options.max_new_tokens):
        if gate is None:  # every member reads the committed token (remote members concurrently)
            logits = forward_all(states, pending, device)
            pending = [None] * len(members)
            logp = combine_alive(combine_fn, logits, weights)
        else:
            lead_logits = states[0].forward(*pending[0]).to(device)
            pending[0] = None
            logp = torch.log_softmax(lead_logits, dim=-1)  # (batch, vocab)
        need = ~finished
        if gate is not None:
            need &= logp.max(dim=-1).values.exp() < gate
        if gate is not None and bool(need.any()):
            # Every other member catches up on what it skipped in one chunked forward, only for the
            # rows that need it.
            rows = need.nonzero().flatten() if int(need.sum()) < batch else None
            logits = [lead_logits] + [
                _catch_up(states[i], pending, i, rows, lead_logits) for i in range(1, len(members))
            ]
            logp = torch.where(need[:, None], combine_alive(combine_fn, logits, weights), logp)
        result.ensembled += int(need.sum())
        result.row_steps += int((~finished).sum())

        token = next_tokens(logp, options.temperature, options.top_k, options.top_p, generator)
        live = ~finished
        token = torch.where(finished, torch.full_like(token, pad_id), token)  # (batch,)
        out.append(token)
        just_eos = ~finished & torch.isin(token, eos)
        for r in just_eos.nonzero().flatten().tolist():
            reason[r] = "eos"
        finished |= just_eos
        if options.stop:
            _check_stop(lead_tok, torch.stack(out, dim=1), finished, reason, options.stop)
        result.steps = step + 1
        yield Step(token, logp, live)
        if bool(finished.all()):
            break
        pending = [_append(p, token) for p in pending]  # commit the token to every member


def _catch_up(state: MemberState, pending: list, i: int, rows: torch.Tensor | None, lead: torch.Tensor):
    """Member ``i`` reads its pending (ids, mask) (batch, n): all rows, or only ``rows`` (the others
    keep theirs). Returns (batch, vocab) logits on the lead's device, valid for the rows that ran;
    ``None`` for a remote member dropped after a failure."""
    try:
        return _catch_up_rows(state, pending, i, rows, lead)
    except MemberDropped:
        return None


def _catch_up_rows(state, pending: list, i: int, rows: torch.Tensor | None, lead: torch.Tensor):
    if rows is not None:
        sub = state.forward_rows(rows, *pending[i])
        if sub is not None:
            ids, mask = pending[i]
            mask = mask.clone()
            mask[rows.to(mask.device)] = 0  # read now: later chunks carry them as masked columns
            pending[i] = (ids, mask)
            out = lead.clone()  # placeholder rows: the gate keeps the lead's distribution there
            out[rows.to(out.device)] = sub.to(out.device)
            return out
    out = state.forward(*pending[i]).to(lead.device)
    pending[i] = None
    return out


def _append(pending: tuple[torch.Tensor, torch.Tensor] | None, token: torch.Tensor):
    """What a member has not read yet, (ids, mask) each (batch, n), plus the committed (batch,) token."""
    new = token[:, None]
    if pending is None:
        return new, torch.ones_like(new)
    ids, mask = pending
    return torch.cat([ids.to(new.device), new], 1), torch.cat([mask.to(new.device), torch.ones_like(new)], 1)


def _check_stop(tokenizer, tokens: torch.Tensor, finished: torch.Tensor, reason: list[str], stop) -> None:
    """Mark rows whose decoded new text (batch, steps) contains a stop string."""
    for r in (~finished).nonzero().flatten().tolist():
        text = tokenizer.decode(tokens[r].tolist(), skip_special_tokens=True)
        if any(s in text for s in stop):
            finished[r] = True
            reason[r] = "stop"


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """``text`` up to (not including) the earliest stop string."""
    cuts = [text.find(s) for s in stop if s in text]
    return text[: min(cuts)] if cuts else text


def forward_all(states: Sequence, pending: list, device) -> list[torch.Tensor | None]:
    """Every member reads its pending (ids, mask): (batch, vocab) logits each on ``device``, ``None``
    for a dropped remote member. Remote members are called at the same time."""

    def one(i: int):
        return lambda: states[i].forward(*pending[i]).to(device)

    return call_all([one(i) for i in range(len(states))], parallel=any(_remote(s) for s in states))


def _remote(state) -> bool:
    return hasattr(state.member, "base_url")


def combine_alive(
    combine_fn, logits: Sequence[torch.Tensor | None], weights: Sequence[float]
) -> torch.Tensor:
    """Combine the members that answered (``None``: dropped), their weights renormalised."""
    if logits[0] is None:
        raise AssertionError("the lead member cannot be dropped")  # excluded when the ensemble is built
    alive = [(x, w) for x, w in zip(logits, weights, strict=True) if x is not None]
    total = sum(w for _, w in alive) or 1.0
    return combine_fn([x for x, _ in alive], [w / total for _, w in alive])
