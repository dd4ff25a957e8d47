"""``Ensemble``: several causal LMs that decode as one.

Members that share a tokenizer are decoded in batches by ``decode.decode_shared`` (one token id committed
to all); members with different tokenizers are aligned by the bytes their tokens decode to and decoded
by ``cross.decode_cross`` (text committed, each member advanced by its own tokens).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace

import torch

from lmfuse.core.tokenizers import compare_tokenizers
from lmfuse.ensemble import complete as _complete
from lmfuse.ensemble.combine import COMBINE, normalise_weights
from lmfuse.ensemble.complete import Chunk, Completion
from lmfuse.ensemble.cross import Aligner, AlignmentReport, decode_cross
from lmfuse.ensemble.decode import DecodeResult, SamplingOptions, Step, cut_at_stop, shared_steps
from lmfuse.ensemble.member import Member, load_member
from lmfuse.ensemble.score import ScoreResult, score_texts
from lmfuse.ensemble.speculate import speculative_steps
from lmfuse.errors import ConfigError, IncompatibleModelsError

ALIGN_MODES = ("auto", "ids", "bytes")


@dataclass
class GenerationStats:
    """What the last ``generate`` call did."""

    steps: int = 0
    row_steps: int = 0
    ensembled: int = 0
    speculations: int = 0
    """Speculation rounds summed over rows (0 without ``speculate``)."""
    dropped: dict[str, str] = field(default_factory=dict)
    """Remote members dropped after a failure (``on_failure: drop``) → the error; the result was
    decided by the others from then on."""

    @property
    def mean_accepted(self) -> float:
        """Speculation: tokens committed per round and row (1..k; 0 without ``speculate``)."""
        return self.row_steps / self.speculations if self.speculations else 0.0

    @property
    def ensembled_fraction(self) -> float:
        """Share of row-steps decided by the whole ensemble (1.0 without a gate)."""
        return self.ensembled / self.row_steps if self.row_steps else 0.0


class Ensemble:
    """Several causal LMs decoding as one (see the module docstring).

    Args:
        members: model paths, ``zoo:NAME``, hub ids, or loaded ``(model, tokenizer)`` pairs. Member 0
            is the lead: its tokenizer, EOS ids and (with ``gate``) confidence decide.
        weights: one non-negative weight per member (normalised); equal by default.
        combine: ``prob`` | ``logprob`` | ``logit`` | ``max`` (see ``combine.py``).
        align: ``auto`` (ids when all tokenizers are identical, else bytes), ``ids`` or ``bytes``.
        union_top_k: with byte alignment, candidates are the union of each member's top-k tokens
            (0: the union of the whole vocabularies, exact but slower).
        gate: selective ensembling: a step is ensembled only where the lead's top probability < gate.
        speculate: k > 0 drafts k tokens with the lead per round, verified by the others in one forward
            each (``speculate.py``): the same greedy tokens / the same distribution as the plain ensemble.
        adaptive: with ``speculate``, k grows while drafts are kept and shrinks when they are not.
        device: where logits are combined (default: the lead member's device).
        devices: one device per member when loading from paths (default CPU).
        dtype: of members loaded from paths (default float32; "auto" keeps the saved dtype).
    """

    def __init__(
        self,
        members: Sequence,
        weights: Sequence[float] | None = None,
        combine: str = "prob",
        align: str = "auto",
        union_top_k: int = 10,
        gate: float | None = None,
        speculate: int = 0,
        adaptive: bool = False,
        device: str | torch.device | None = None,
        devices: Sequence[str | None] | None = None,
        dtype: str | torch.dtype | None = "float32",
    ) -> None:
        problems = _option_problems(members, combine, align, union_top_k, gate, speculate, devices)
        if problems:
            raise ConfigError(problems)
        self.weights = normalise_weights(weights, len(members))
        devs = list(devices) if devices is not None else ["cpu"] * len(members)
        self.members: list[Member] = [
            load_member(s, dtype, d, i) for i, (s, d) in enumerate(zip(members, devs, strict=True))
        ]
        lead = self.members[0]
        if getattr(lead, "on_failure", "error") == "drop":
            raise ConfigError(
                f"members[0] ({lead.name}): on_failure 'drop' is not possible for the lead member (it "
                f"drafts and decides EOS); expected on_failure 'error' there"
            )
        self.combine = combine
        self.gate = gate
        self.speculate = speculate
        self.adaptive = adaptive
        self.union_top_k = union_top_k
        self.device = torch.device(device) if device is not None else self.members[0].device
        same = all(
            compare_tokenizers(self.members[0].tokenizer, m.tokenizer).compatible for m in self.members
        )
        if align == "ids" and not same:
            lead = self.members[0]
            other = next(
                m for m in self.members if not compare_tokenizers(lead.tokenizer, m.tokenizer).compatible
            )
            raise IncompatibleModelsError(
                compare_tokenizers(lead.tokenizer, other.tokenizer, lead.name, other.name).summary()
                + "\nexpected members that share a tokenizer for align='ids'; use align='bytes' (or 'auto')"
            )
        self.shared_vocab = same and align != "bytes"
        if speculate and not self.shared_vocab:
            raise ConfigError(
                "speculate: expected members that share a tokenizer; speculation over byte-aligned "
                "members is not implemented yet (use speculate=0)"
            )
        self.aligner = None if self.shared_vocab else Aligner(self.members)
        self._fresh_stats()

    @property
    def vocab_sizes(self) -> list[int]:
        return [m.vocab_size for m in self.members]

    @property
    def alignment(self) -> AlignmentReport | None:
        """How much of each member's vocabulary maps onto the others' bytes (byte alignment only)."""
        return self.aligner.report if self.aligner else None

    # ------------------------------------------------------------------ generation

    def generate(
        self,
        prompts: Sequence[str],
        max_new_tokens: int = 32,
        temperature: float = 0.0,
        top_p: float = 1.0,
        top_k: int = 0,
        stop: Sequence[str] | None = None,
        seed: int | None = None,
        chat: bool = False,
        batch_size: int = 16,
        ignore_eos: bool = False,
        on_prompt: Callable[[int], None] | None = None,
    ) -> list[str]:
        """Completions of ``prompts`` (prompt removed, cut before any stop string). Greedy when
        ``temperature`` is 0; with a ``seed``, sampling is reproducible (for the same ``batch_size``).
        ``chat``: wrap each prompt as a user message in each member's chat template. ``ignore_eos``:
        always decode ``max_new_tokens`` (benchmarks). ``on_prompt(n)``: called as prompts finish."""
        options = self._options(max_new_tokens, temperature, top_p, top_k, stop, seed, ignore_eos)
        if batch_size < 1:
            raise ConfigError(f"batch_size: expected a positive integer, found {batch_size}")
        self._fresh_stats()
        texts: list[str] = []
        for start in range(0, len(prompts), batch_size):
            opts = replace(options, seed=None if seed is None else seed + start)
            chunk = prompts[start : start + batch_size]
            if self.shared_vocab:
                ids, mask = self._encode([self._template(self.members[0], p, chat) for p in chunk], chat)
                res = self._decode_shared(ids, mask, opts)
                texts.extend(self._texts(res.tokens, options.stop))
            else:  # each member reads the prompt in its own template and tokens
                rows = [[self._prompt_ids(m, p, chat) for m in self.members] for p in chunk]
                done, res = decode_cross(
                    self.aligner,
                    self.weights,
                    self.combine,
                    rows,
                    opts,
                    self.union_top_k,
                    self.gate,
                    self.device,
                )
                texts.extend(done)
            self._add_stats(res)
            if on_prompt:
                on_prompt(len(chunk))
        return texts

    def generate_ids(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        max_new_tokens: int = 32,
        temperature: float = 0.0,
        top_p: float = 1.0,
        top_k: int = 0,
        seed: int | None = None,
        ignore_eos: bool = False,
    ) -> torch.Tensor:
        """Like ``model.generate``: left-padded ``input_ids`` (batch, prompt) → (batch, prompt + new),
        rows that stopped early padded with the pad id. Members must share a tokenizer."""
        if not self.shared_vocab:
            raise IncompatibleModelsError(
                "generate_ids needs members that share a tokenizer (token ids mean the same to all); "
                "these members are aligned by bytes: use generate(prompts) instead"
            )
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        options = self._options(max_new_tokens, temperature, top_p, top_k, None, seed, ignore_eos)
        self._fresh_stats()
        res = self._decode_shared(input_ids, mask, options)
        self._add_stats(res)
        return torch.cat([input_ids.to(self.device), res.tokens.to(self.device)], dim=1)

    # ------------------------------------------------------------------ completions (for servers)

    def complete(
        self,
        prompts: Sequence[str | list[dict]],
        *,
        max_new_tokens: int = 32,
        temperature: float = 0.0,
        top_p: float = 1.0,
        top_k: int = 0,
        stop: Sequence[str] | None = None,
        seed: int | None = None,
        chat: bool = False,
        logprobs: int = 0,
        batch_size: int = 16,
    ) -> list[Completion]:
        """``generate`` with what a server returns: finish reason, token counts and, per committed step,
        its log-prob under the combined distribution and the ``logprobs`` most likely steps. The texts
        equal ``generate``'s. With ``chat`` a prompt may be a list of ``{"role", "content"}`` messages."""
        options = self._options(max_new_tokens, temperature, top_p, top_k, stop, seed, False)
        if logprobs < 0 or batch_size < 1:
            raise ConfigError(f"logprobs >= 0 and batch_size >= 1 expected, found {logprobs}, {batch_size}")
        self._fresh_stats()
        out: list[Completion] = []
        for start in range(0, len(prompts), batch_size):
            opts = replace(options, seed=None if seed is None else seed + start)
            events, transcripts, counts, res = _complete.batch_events(
                self, prompts[start : start + batch_size], opts, chat, logprobs
            )
            done = _complete.collect(events, transcripts, counts)
            for r, c in enumerate(done):
                c.finish_reason = _complete.finish_reason(res, r)
            out.extend(done)
            self._add_stats(res)
        return out

    def stream(
        self,
        prompt: str | list[dict],
        *,
        max_new_tokens: int = 32,
        temperature: float = 0.0,
        top_p: float = 1.0,
        top_k: int = 0,
        stop: Sequence[str] | None = None,
        seed: int | None = None,
        chat: bool = False,
        logprobs: int = 0,
    ) -> Iterator[Chunk]:
        """One ``Chunk`` per committed step of one prompt, as soon as it is decided; the chunks' texts
        add up to ``complete([prompt], ...)[0].text`` (same options, same seed)."""
        options = self._options(max_new_tokens, temperature, top_p, top_k, stop, seed, False)
        if logprobs < 0:
            raise ConfigError(f"logprobs: expected an integer >= 0, found {logprobs}")
        batch = _complete.batch_events(self, [prompt], options, chat, logprobs)  # bad input fails here
        return self._stream(batch, max_new_tokens)

    def _stream(self, batch, max_new_tokens: int) -> Iterator[Chunk]:
        self._fresh_stats()
        res = yield from _complete.stream_steps(batch, max_new_tokens)
        self._add_stats(res)

    # ------------------------------------------------------------------ scoring

    @torch.no_grad()
    def score(self, texts: Sequence[str], prompts: Sequence[str] | None = None) -> list[ScoreResult]:
        """The ensemble's log-likelihood of each text (of each continuation after its prompt when
        ``prompts`` are given): one forward per member, distributions combined position by position."""
        return score_texts(self, texts, prompts)

    # ------------------------------------------------------------------ helpers

    def _options(self, max_new_tokens, temperature, top_p, top_k, stop, seed, ignore_eos) -> SamplingOptions:
        problems = []
        if max_new_tokens < 1:
            problems.append(f"max_new_tokens: expected a positive integer, found {max_new_tokens}")
        if temperature < 0:
            problems.append(f"temperature: expected >= 0 (0 = greedy), found {temperature}")
        if not 0.0 < top_p <= 1.0:
            problems.append(f"top_p: expected a value in (0, 1], found {top_p}")
        if top_k < 0:
            problems.append(f"top_k: expected >= 0 (0 = off), found {top_k}")
        if problems:
            raise ConfigError(problems)
        stops = [s for s in (stop or []) if s]
        return SamplingOptions(max_new_tokens, temperature, top_k, top_p, stops, seed, ignore_eos)

    def _template(self, member: Member, prompt: str | list[dict], chat: bool) -> str:
        if not chat:
            if not isinstance(prompt, str):
                raise ConfigError(
                    f"prompts: expected a string, found {type(prompt).__name__} (a list of messages "
                    f"needs chat=True / --chat)"
                )
            return prompt
        if not getattr(member.tokenizer, "chat_template", None):
            raise ConfigError(
                f"chat: member {member.name} has no chat template; expected a tokenizer with "
                f"chat_template set, or call without chat=True / --chat"
            )
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        return member.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def _encode(self, prompts: list[str], chat: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded ids and mask (batch, longest) in the lead's tokenizer. A chat template writes its
        own special tokens (BOS...), so none are added to its text."""
        tok = self.members[0].tokenizer
        enc = tok(
            prompts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=not chat
        )
        _check_nonempty(enc["attention_mask"].sum(1).tolist(), self.members[0].name)
        return enc["input_ids"], enc["attention_mask"]

    def _prompt_ids(self, member: Member, prompt: str, chat: bool) -> list[int]:
        """One prompt in one member's template and tokens (byte alignment)."""
        ids = member.tokenizer(self._template(member, prompt, chat), add_special_tokens=not chat)["input_ids"]
        _check_nonempty([len(ids)], member.name)
        return ids

    def _texts(self, tokens: torch.Tensor, stop: list[str]) -> list[str]:
        lead = self.members[0]
        texts = []
        for row in tokens.tolist():
            cut = next((j for j, t in enumerate(row) if t in lead.eos_ids), len(row))
            texts.append(cut_at_stop(lead.tokenizer.decode(row[:cut], skip_special_tokens=True), stop))
        return texts

    def steps(self, ids, mask, options: SamplingOptions, result: DecodeResult) -> Iterator[Step]:
        """The shared-tokenizer decode loop in use: plain (``decode.py``) or speculative."""
        if self.speculate:
            return speculative_steps(
                self.members, self.weights, self.combine, ids, mask, options, result,
                self.speculate, self.adaptive, self.device,
            )  # fmt: skip
        args = (self.members, self.weights, self.combine, ids, mask, options, result, self.gate, self.device)
        return shared_steps(*args)

    def _decode_shared(self, ids, mask, options: SamplingOptions) -> DecodeResult:
        """Each row's committed ids (a speculative step commits only in some rows), right-padded."""
        res = DecodeResult(torch.empty(len(ids), 0, dtype=torch.long), ["length"] * len(ids))
        rows: list[list[int]] = [[] for _ in range(len(ids))]
        for step in self.steps(ids, mask, options, res):
            for r in step.live.nonzero().flatten().tolist():
                rows[r].append(int(step.tokens[r]))
        width = max(map(len, rows))
        pad = self.members[0].tokenizer.pad_token_id
        res.tokens = torch.tensor([r + [pad] * (width - len(r)) for r in rows], dtype=torch.long)
        return res

    def _fresh_stats(self) -> None:
        """A new call: empty stats, and remote members dropped by the last call are tried again."""
        self.stats = GenerationStats()
        for m in self.members:
            if getattr(m, "failed", None):
                m.failed = None

    def _add_stats(self, res) -> None:
        for m in self.members:
            if getattr(m, "failed", None):
                self.stats.dropped[m.name] = m.failed
        self.stats.steps += res.steps
        self.stats.row_steps += res.row_steps
        self.stats.ensembled += res.ensembled
        self.stats.speculations += res.speculations


def _check_nonempty(lengths: list[int], name: str) -> None:
    empty = [i for i, n in enumerate(lengths) if n == 0]
    if empty:
        raise ConfigError(
            f"prompts: member {name} sees no token in prompt(s) {empty} (empty text and no BOS); "
            f"expected at least one token to condition on: pass a non-empty prompt"
        )


def _option_problems(members, combine, align, union_top_k, gate, speculate, devices) -> list[str]:
    """Every problem with ``Ensemble``'s options, at once."""
    problems = []
    if not members:
        problems.append("members: expected at least one model, found none")
    if combine not in COMBINE:
        problems.append(f"combine: expected one of {', '.join(COMBINE)}, found {combine!r}")
    if align not in ALIGN_MODES:
        problems.append(f"align: expected one of {', '.join(ALIGN_MODES)}, found {align!r}")
    if gate is not None and not 0.0 < gate <= 1.0:
        problems.append(f"gate: expected a probability in (0, 1], found {gate}")
    if union_top_k < 0:
        problems.append(
            f"union_top_k: expected an integer >= 0 (0 = whole vocabularies), found {union_top_k}"
        )
    if speculate < 0:
        problems.append(f"speculate: expected an integer >= 0 (0 = off), found {speculate}")
    if speculate and gate is not None:
        problems.append("speculate and gate: expected one of them, found both (a gated step has no verifier)")
    if devices is not None and len(devices) != len(members):
        problems.append(f"devices: expected one per member ({len(members)}), found {len(devices)}")
    return problems
