"""Completions and streams of an ``Ensemble`` for a server: text, finish reason, token counts and the
log-probs of the combined distribution, one committed step at a time.

Both decode paths yield their steps (``decode.shared_steps``: ids; ``cross.cross_steps``: bytes); each
row's ``Transcript`` turns its steps into text exactly as ``Ensemble.generate`` does (cut at the first EOS
and before the earliest stop string). A stream emits, after each step, the text that can no longer
change: an incomplete UTF-8 character and a tail that could still grow into a stop string are held back
until the next step (or the end) decides them, so the chunks always add up to the completion's text.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from lmfuse.ensemble.cross import EOS, CrossStep, cross_steps
from lmfuse.ensemble.decode import DecodeResult, SamplingOptions, Step, cut_at_stop
from lmfuse.ensemble.track import utf8_prefix


@dataclass
class Completion:
    """One prompt's completion (OpenAI's ``choices[i]`` with ``logprobs``)."""

    text: str
    finish_reason: str
    """``stop`` (an EOS or a stop string) or ``length`` (``max_new_tokens`` reached)."""
    prompt_tokens: int
    """Prompt length in the lead member's tokens."""
    completion_tokens: int
    """Committed steps (an EOS counts, as in vLLM)."""
    tokens: list[str] = field(default_factory=list)
    """The text of each committed step (the token's own string; cross-tokenizer: its bytes)."""
    token_logprobs: list[float] = field(default_factory=list)
    """Log-prob of each committed step under the combined distribution, before temperature."""
    top_logprobs: list[list[tuple[str, float]]] = field(default_factory=list)
    """The ``logprobs`` most likely steps of the combined distribution (empty lists when 0)."""


@dataclass
class Chunk:
    """One committed step of a stream."""

    text: str
    """New text that is now final (may be empty while a stop string or a character is undecided)."""
    logprob: float
    top_logprobs: list[tuple[str, float]]
    finish_reason: str | None = None
    """``None`` until the last chunk."""


@dataclass
class Event:
    """One row's committed step."""

    piece: int | bytes
    """The token id (shared tokenizer) or the bytes (byte alignment; ``EOS`` for the end)."""
    token: str
    logprob: float
    top: list[tuple[str, float]]


class Transcript:
    """One row's committed steps and the text they make."""

    def __init__(self, tokenizer, eos_ids: set[int], stop: list[str]) -> None:
        self.tokenizer = tokenizer  # None: byte alignment (pieces are bytes)
        self.eos_ids = eos_ids
        self.stop = stop
        self.ids: list[int] = []
        self.data = b""
        self.emitted = ""

    def add(self, piece: int | bytes) -> None:
        if isinstance(piece, bytes):
            self.data += piece
        elif piece not in self.eos_ids:
            self.ids.append(piece)

    def text(self, final: bool) -> str:
        """The text so far; not ``final``: without the tail that a later step could still change."""
        if self.tokenizer is None:
            raw = utf8_prefix(self.data).decode("utf-8")
        else:
            raw = self.tokenizer.decode(self.ids, skip_special_tokens=True)
            if not final:
                raw = raw.rstrip("\ufffd")  # a character whose remaining bytes are still to come
        cut = cut_at_stop(raw, self.stop)
        if final or len(cut) < len(raw):
            return cut
        hold = max((n for s in self.stop for n in range(1, len(s)) if raw.endswith(s[:n])), default=0)
        return raw[: len(raw) - hold]

    def delta(self, final: bool) -> str:
        """Text that became final since the last call."""
        now = self.text(final)
        new = now[len(self.emitted) :] if now.startswith(self.emitted) else ""
        self.emitted += new
        return new


def shared_events(step: Step, tokenizer, n_top: int) -> list[Event | None]:
    """Per row, the committed id with its log-prob and the ``n_top`` most likely ids."""
    out: list[Event | None] = []
    top_v, top_i = torch.topk(step.logp, min(n_top, step.logp.shape[-1])) if n_top else (None, None)
    for r, live in enumerate(step.live.tolist()):
        if not live:
            out.append(None)
            continue
        i = int(step.tokens[r])
        top = []
        if n_top:
            top = [(_tok(tokenizer, j), v) for j, v in zip(top_i[r].tolist(), top_v[r].tolist(), strict=True)]
        out.append(Event(i, _tok(tokenizer, i), float(step.logp[r, i]), top))
    return out


def cross_events(step: CrossStep, eos_text: str, n_top: int) -> list[Event | None]:
    """Per row, the committed bytes with their log-prob over the candidates and the ``n_top`` best."""
    out: list[Event | None] = []
    for c in step.choices:
        if c is None:
            out.append(None)
            continue
        name = [eos_text if b == EOS else b.decode("utf-8", "replace") for b in c.cands]
        top = []
        if n_top:
            v, i = torch.topk(c.logp, min(n_top, len(c.cands)))
            top = [(name[j], x) for j, x in zip(i.tolist(), v.tolist(), strict=True)]
        out.append(Event(c.cands[c.pick], name[c.pick], float(c.logp[c.pick]), top))
    return out


def _tok(tokenizer, i: int) -> str:
    return tokenizer.decode([i], skip_special_tokens=False)


def collect(
    events: Iterator[list[Event | None]], transcripts: list[Transcript], prompt_tokens: list[int]
) -> list[Completion]:
    """Fold a batch's events into one ``Completion`` per row (finish reasons set by the caller)."""
    done = [Completion("", "length", n, 0) for n in prompt_tokens]
    for row_events in events:
        for c, t, e in zip(done, transcripts, row_events, strict=True):
            if e is None:
                continue
            t.add(e.piece)
            c.completion_tokens += 1
            c.tokens.append(e.token)
            c.token_logprobs.append(e.logprob)
            c.top_logprobs.append(e.top)
    for c, t in zip(done, transcripts, strict=True):
        c.text = t.text(final=True)
    return done


def finish_reason(result: DecodeResult, row: int) -> str:
    """OpenAI's reason: ``length`` when ``max_new_tokens`` ended the row, else ``stop``."""
    return "length" if result.finished_by[row] == "length" else "stop"


def batch_events(ens, prompts: list, options: SamplingOptions, chat: bool, n_top: int):
    """A batch's steps as per-row events, a ``Transcript`` per row, prompt lengths (lead's tokens) and
    the ``DecodeResult`` the decode loop fills."""
    lead = ens.members[0]
    stop = options.stop
    res = DecodeResult(torch.empty(len(prompts), 0, dtype=torch.long), ["length"] * len(prompts))
    if ens.shared_vocab:
        ids, mask = ens._encode([ens._template(lead, p, chat) for p in prompts], chat)
        steps = ens.steps(ids, mask, options, res)
        events = (shared_events(s, lead.tokenizer, n_top) for s in steps)
        transcripts = [Transcript(lead.tokenizer, lead.eos_ids, stop) for _ in prompts]
        return events, transcripts, mask.sum(1).tolist(), res
    rows = [[ens._prompt_ids(m, p, chat) for m in ens.members] for p in prompts]
    args = (ens.aligner, ens.weights, ens.combine, rows, options, res, ens.union_top_k, ens.gate, ens.device)
    events = (cross_events(s, lead.tokenizer.eos_token or "", n_top) for s in cross_steps(*args))
    return events, [Transcript(None, set(), stop) for _ in prompts], [len(r[0]) for r in rows], res


def stream_steps(batch, max_new_tokens: int) -> Iterator[Chunk]:
    """One prompt's ``batch_events`` as chunks, each as soon as its step is committed (the decode loops
    set a row's reason before yielding its last step); returns the ``DecodeResult``."""
    events, (t,), _, res = batch
    n = 0
    for (e,) in events:
        if e is None:
            continue
        n += 1
        t.add(e.piece)
        last = res.finished_by[0] != "length" or n == max_new_tokens
        chunk = Chunk(t.delta(final=last), e.logprob, e.top)
        if last:
            chunk.finish_reason = finish_reason(res, 0)
        yield chunk
    return res
