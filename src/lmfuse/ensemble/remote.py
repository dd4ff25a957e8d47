"""Remote ensemble members: an OpenAI-compatible ``/v1/completions`` endpoint (vLLM, SGLang, ``lmfuse
serve``) whose tokenizer is known here.

Every call sends the row's whole token-id prompt (``return_tokens_as_token_ids``, so the server neither
re-tokenises nor adds a BOS, and its prefix cache makes a call one decode step): ``max_tokens: 1,
logprobs: K`` for the next-token distribution; ``echo: true`` too when the distributions after several
new tokens are needed (speculative verification); ``max_tokens: k`` for a lead's draft. All rows of a
batch go in one call (a list of token-id prompts).

Top-K truncation: the server returns only the K most likely tokens of each distribution. The dense
distribution used here gives them their exact log-probs and spreads the remaining mass ``1 - Σ top-K``
evenly over the other ids of the vocabulary (``-inf`` when nothing remains). With K at least the
vocabulary size this is the member's distribution exactly; with a smaller K, a token outside a member's
top-K gets that member's average leftover probability instead of its own (see the README).

Failures: a call is retried on timeouts, connection errors, 408/409/429 and 5xx (as
``lmfuse.backends.openai_api``); when retries are spent the member raises ``RemoteMemberError`` naming
it, or, with ``on_failure="drop"``, is marked failed and the ensemble goes on without it.
"""

from __future__ import annotations

import math
import os
import random
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from lmfuse.backends.openai_api import RETRY_STATUS, _retry_after
from lmfuse.errors import BackendError, ConfigError

FAILURE_MODES = ("error", "drop")


class RemoteMemberError(BackendError):
    """A remote member failed (after its retries)."""


class MemberDropped(Exception):
    """Raised by a failed member's state with ``on_failure="drop"``; the decode loops leave it out."""


@dataclass(eq=False)
class RemoteMember:
    """A model behind an OpenAI-compatible completions endpoint, with its tokenizer (``Member``'s
    interface: ``name``, ``tokenizer``, ``vocab_size``, ``eos_ids``, ``device``, ``open(batch)``)."""

    base_url: str
    model: str
    tokenizer: Any
    name: str
    logprobs: int = 20
    """K of each call: vLLM caps it with ``--max-logprobs`` (default 20)."""
    api_key_env: str | None = None
    timeout: float = 60.0
    max_retries: int = 3
    backoff: float = 0.5
    on_failure: str = "error"
    eos_ids: set[int] = field(default_factory=set)
    calls: int = 0
    """HTTP calls made (retries included)."""
    seconds: float = 0.0
    """Wall time spent in calls."""
    server_seconds: float = 0.0
    """Time the server reports it spent (``lmfuse serve``'s ``lmfuse.seconds``; 0 for other servers)."""

    def __post_init__(self) -> None:
        import httpx

        self.vocab_size = len(self.tokenizer)
        if not self.eos_ids and self.tokenizer.eos_token_id is not None:
            self.eos_ids = {int(self.tokenizer.eos_token_id)}
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        key = os.environ.get(self.api_key_env, "") if self.api_key_env else ""
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.client = httpx.Client(base_url=self.base_url.rstrip("/"), headers=headers, timeout=self.timeout)
        self.failed: str | None = None

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def __repr__(self) -> str:  # never shows the key
        return f"RemoteMember(name={self.name!r}, base_url={self.base_url!r}, model={self.model!r})"

    def open(self, batch: int) -> RemoteState:
        return RemoteState(self, batch)

    def complete(self, prompts: list[list[int]], **options) -> list[dict]:
        """One ``/completions`` call for a batch of token-id prompts → each prompt's ``choices`` entry."""
        if self.failed:
            raise MemberDropped(self.name)
        body = {"model": self.model, "prompt": prompts, "logprobs": self.logprobs, "temperature": 0.0}
        body.update(options, return_tokens_as_token_ids=True)
        try:
            data = self._post(body)
        except RemoteMemberError as exc:
            if self.on_failure != "drop":
                raise
            self.failed = str(exc)
            raise MemberDropped(self.name) from exc
        choices = sorted(data.get("choices", []), key=lambda c: c.get("index", 0))
        if len(choices) != len(prompts):
            raise RemoteMemberError(
                f"remote member {self.name} ({self.base_url}, model {self.model}): expected "
                f"{len(prompts)} choices, found {len(choices)}"
            )
        return choices

    def _post(self, body: dict) -> dict:
        import httpx

        start, error = time.perf_counter(), ""
        for attempt in range(1, self.max_retries + 2):
            self.calls += 1
            wait = None
            try:
                resp = self.client.post("/completions", json=body)
                if resp.status_code == 200:
                    self.seconds += time.perf_counter() - start
                    data = resp.json()
                    self.server_seconds += float((data.get("lmfuse") or {}).get("seconds") or 0.0)
                    return data
                error = f"HTTP {resp.status_code}: {resp.text[:200]}"
                retry = resp.status_code in RETRY_STATUS or resp.status_code >= 500
                wait = _retry_after(resp.headers.get("retry-after"))
            except httpx.TimeoutException:
                error, retry = f"timed out after {self.timeout} s", True
            except httpx.TransportError as exc:
                error, retry = f"connection failed ({type(exc).__name__})", True
            if not retry or attempt > self.max_retries:
                break
            delay = min(8.0, wait if wait is not None else self.backoff * 2 ** (attempt - 1))
            time.sleep(delay * (1 + random.random() * 0.25))
        self.seconds += time.perf_counter() - start
        raise RemoteMemberError(
            f"remote member {self.name} ({self.base_url}, model {self.model}) failed after {attempt} "
            f"attempt(s): {error}"
        )

    def dense(self, top: dict[str, float] | None) -> torch.Tensor:
        """(vocab,) log-probs from one ``top_logprobs`` entry: the top-K exact, the leftover mass spread
        evenly over the other ids."""
        out = torch.empty(self.vocab_size)
        if not top:
            raise RemoteMemberError(f"remote member {self.name}: expected top_logprobs, found none")
        ids, vals = [], []
        for key, lp in top.items():
            if not key.startswith("token_id:"):
                raise RemoteMemberError(
                    f"remote member {self.name}: expected tokens as 'token_id:<id>' (the server must support "
                    f"return_tokens_as_token_ids, as vLLM and lmfuse serve do), found {key!r}"
                )
            i = int(key[9:])
            if i < self.vocab_size:
                ids.append(i)
                vals.append(float(lp))
        rest = 1.0 - sum(math.exp(v) for v in vals)
        others = self.vocab_size - len(ids)
        out.fill_(math.log(rest / others) if rest > 1e-9 and others > 0 else float("-inf"))
        out[torch.tensor(ids, dtype=torch.long)] = torch.tensor(vals)
        return out


def _tops(choice: dict) -> list:
    return (choice.get("logprobs") or {}).get("top_logprobs") or []


def distributions(
    member: RemoteMember, prompts: list[list[int]], last: list[int], echo: bool = False
) -> list[list[torch.Tensor]]:
    """Per prompt, the (vocab,) log-probs after each of its last ``last[r]`` tokens, in one call.

    One position: ``max_tokens: 1``, read at the generated position. Several: ``echo`` on the prompt
    with a placeholder token appended, read at the echoed positions only (echoed entry i predicts token
    i), so what the server generates never matters. vLLM and ``lmfuse serve`` list a generated EOS with its
    logprob; a server that stops on an EOS without reporting it (a generated position with no entry) is
    asked again that second way for those rows (one more call)."""
    echo = echo or max(last) > 1
    pad = member.tokenizer.pad_token_id or 0
    sent = [p + [pad] for p in prompts] if echo else prompts
    choices = member.complete(sent, max_tokens=1, echo=echo)
    out: list[list[torch.Tensor | None]] = []
    for r, (p, choice) in enumerate(zip(prompts, choices, strict=True)):
        tops = _tops(choice)
        want = tops[len(p) - last[r] + 1 : len(p) + 1] if echo else tops[:1]
        if not echo and not want:
            want = [None]  # the generated position is missing: asked again below
        if len(want) != last[r] or (echo and not all(want)):
            raise RemoteMemberError(
                f"remote member {member.name}: expected {last[r]} top_logprobs entries for prompt {r}, "
                f"found {len(want)} (does the server return logprobs{' with echo' if echo else ''}?)"
            )
        out.append([None if e is None else member.dense(e) for e in want])
    missing = [r for r, d in enumerate(out) if d[-1] is None]
    if missing:
        again = distributions(member, [prompts[r] for r in missing], [1] * len(missing), echo=True)
        for r, d in zip(missing, again, strict=True):
            out[r][-1] = d[-1]
    return out


class RemoteState:
    """A remote member decoding a batch: each row's token ids so far (the server caches the prefix)."""

    def __init__(self, member: RemoteMember, batch: int) -> None:
        self.member = member
        self.rows: list[list[int]] = [[] for _ in range(batch)]

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None, all_logits: bool = False):
        """Append ``ids`` (batch, n) where ``mask`` is 1; log-probs after the last (batch, vocab), or
        after each new position (batch, n, vocab) with ``all_logits`` (padding positions: zeros)."""
        mask = torch.ones_like(ids) if mask is None else mask
        n = ids.shape[1]
        new = []
        for r, (row, m) in enumerate(zip(ids.tolist(), mask.tolist(), strict=True)):
            self.rows[r] += [t for t, keep in zip(row, m, strict=True) if keep]
            new.append(sum(m) if all_logits else 1)
        dists = distributions(self.member, [list(r) for r in self.rows], new)
        out = torch.zeros(len(self.rows), n if all_logits else 1, self.member.vocab_size)
        for r, d in enumerate(dists):
            out[r, out.shape[1] - len(d) :] = torch.stack(d)
        return out if all_logits else out[:, -1]

    def score_next(self, prompts: list[list[int]]) -> torch.Tensor:
        """(len(prompts), vocab) next-token log-probs of whole token-id prompts (byte alignment)."""
        return torch.stack([d[-1] for d in distributions(self.member, prompts, [1] * len(prompts))])

    def forward_rows(self, rows, ids, mask):
        return None  # the decode loop then calls forward for every row

    def drop(self, n: torch.Tensor) -> None:
        """Forget each row's last ``n[r]`` ids."""
        for r, m in enumerate(n.tolist()):
            if m > 0:
                self.rows[r] = self.rows[r][: len(self.rows[r]) - int(m)]

    def draft(self, ids: torch.Tensor, mask: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A greedy lead's ``k`` drafted ids (batch, k) and log-probs at each drafted position (batch, k,
        vocab) in one call (``max_tokens: k``; sampled drafts are picked by the client, one call each, so
        that they come from the distribution it sees). A row whose draft ends early (EOS) is filled with
        one-hot proposals of its EOS: a proposal the acceptance rule handles exactly."""
        for r, (row, m) in enumerate(zip(ids.tolist(), mask.tolist(), strict=True)):
            self.rows[r] += [t for t, keep in zip(row, m, strict=True) if keep]
        choices = self.member.complete([list(r) for r in self.rows], max_tokens=k)
        fill = min(self.member.eos_ids) if self.member.eos_ids else 0
        drafts = torch.full((len(self.rows), k), fill, dtype=torch.long)
        logps = torch.full((len(self.rows), k, self.member.vocab_size), float("-inf"))
        logps[:, :, fill] = 0.0
        short = []
        for r, choice in enumerate(choices):
            tokens = (choice.get("logprobs") or {}).get("tokens") or []
            for j, (tok, entry) in enumerate(zip(tokens[:k], _tops(choice)[:k], strict=True)):
                drafts[r, j] = int(tok[9:])
                logps[r, j] = self.member.dense(entry)
            if len(tokens) < k and not (tokens and int(tokens[-1][9:]) in self.member.eos_ids):
                short.append((r, len(tokens)))  # stopped on an EOS it did not report (not vLLM)
        if short:  # the lead's real distribution where it stopped (its draft there: the EOS)
            heads = [self.rows[r] + drafts[r, :j].tolist() for r, j in short]
            again = distributions(self.member, heads, [1] * len(heads), echo=True)
            for (r, j), d in zip(short, again, strict=True):
                logps[r, j] = d[-1]
        for r in range(len(self.rows)):  # the lead has read drafts 1..k-1, as the verifiers will
            self.rows[r] += drafts[r, : k - 1].tolist()
        return drafts, logps


_POOL = None


def call_all(calls: list, parallel: bool) -> list:
    """Run ``calls`` (in threads when ``parallel``); a call raising ``MemberDropped`` gives ``None``."""
    global _POOL

    def run(fn):
        try:
            return fn()
        except MemberDropped:
            return None

    if not parallel or len(calls) < 2:
        return [run(fn) for fn in calls]
    if _POOL is None:
        from concurrent.futures import ThreadPoolExecutor

        _POOL = ThreadPoolExecutor(max_workers=16, thread_name_prefix="lmfuse-remote")
    return list(_POOL.map(run, calls))


def parse_remote(spec: dict | str, index: int = 0, tokenizer: str | None = None) -> RemoteMember:
    """A ``RemoteMember`` from ``{"base_url", "model", "tokenizer", "api_key_env", "logprobs", ...}`` or
    ``"http://host:8000/v1#NAME"`` (then ``tokenizer`` is required)."""
    from lmfuse.core.loading import load_tokenizer

    if isinstance(spec, str):
        url, _, model = spec.partition("#")
        spec = {"base_url": url, "model": model, "tokenizer": tokenizer}
    spec = dict(spec)
    problems = [
        f"members[{index}]: expected {key!r} (remote member)"
        for key in ("base_url", "model", "tokenizer")
        if not spec.get(key)
    ]
    known = {
        "base_url",
        "model",
        "tokenizer",
        "name",
        "logprobs",
        "api_key_env",
        "timeout",
        "max_retries",
        "backoff",
        "on_failure",
    }
    problems += [
        f"members[{index}]: unknown key {k!r} (expected one of {', '.join(sorted(known))})"
        for k in spec
        if k not in known
    ]
    if spec.get("on_failure", "error") not in FAILURE_MODES:
        problems.append(
            f"members[{index}].on_failure: expected one of {', '.join(FAILURE_MODES)}, found {spec['on_failure']!r}"
        )
    if int(spec.get("logprobs", 20)) < 1:
        problems.append(f"members[{index}].logprobs: expected K >= 1, found {spec['logprobs']}")
    if spec.get("api_key_env") and not os.environ.get(spec["api_key_env"]):
        problems.append(f"members[{index}]: environment variable {spec['api_key_env']} is not set")
    if problems:
        raise ConfigError(problems)
    tok = load_tokenizer(spec.pop("tokenizer"))
    name = spec.pop("name", None) or f"{spec['model']}@{spec['base_url']}"
    return RemoteMember(tokenizer=tok, name=name, **spec)


def is_remote(spec: Any) -> bool:
    """A member spec that names an endpoint: an ``http(s)://`` URL or a dict with ``base_url``."""
    if isinstance(spec, RemoteMember):
        return True
    if isinstance(spec, dict):
        return "base_url" in spec
    return isinstance(spec, str) and spec.startswith(("http://", "https://"))
