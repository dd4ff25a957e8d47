"""One small adapter per method, each calling only that method's public API, each turning a ``Call``
into an ``Outcome``: ``single`` (a backend passed through) here, ``vote`` / ``moa`` / ``eot`` in
``text_fusions.py``, ``ensemble`` in ``ensemble_fusion.py``; ``build`` picks the adapter for a model.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from lmfuse.backends.base import Backend, Reply, Request
from lmfuse.serve.fusion import Call, Choice, Delta, FusionFailed, Outcome, RequestError
from lmfuse.serve.members import stream_reply

DEFAULT_MAX_TOKENS = 256
"""Chat without ``max_tokens`` on a backend of unknown context length."""


def member_usage(name: str, reply: Reply) -> dict[str, Any]:
    """One member call as the ``lmfuse`` field lists it (never a credential: only name, numbers, error)."""
    out: dict[str, Any] = {"member": name, "prompt_tokens": reply.prompt_tokens,
                           "completion_tokens": reply.completion_tokens, "seconds": round(reply.seconds, 4)}  # fmt: skip
    if not reply.ok:
        out["error"] = reply.error
    return out


def requests_for(
    call: Call, backend: Backend, n: int | None = None, max_model_len: int | None = None, member: str = ""
) -> list[Request]:
    """``n`` (default ``call.n``) requests for ``call``; a seeded call gets seeds ``seed, seed+1, ...``.
    With ``max_model_len`` (prompt + completion tokens), a longer prompt raises ``RequestError`` and
    ``max_tokens`` is cut to what is left."""
    max_tokens = call.max_tokens
    ctx = max_model_len
    base = Request(messages=call.messages, max_tokens=1) if call.messages is not None else None
    if base is None:
        text = call.prompt if isinstance(call.prompt, str) else None
        ids = call.prompt if isinstance(call.prompt, list) else None
        base = Request(prompt=text, prompt_ids=ids, max_tokens=1)
    if ctx and hasattr(backend, "encode"):
        used = len(backend.encode(base))
        if used >= ctx:
            raise RequestError(
                f"the prompt is {used} tokens; model {backend.name!r} takes at most {ctx} tokens "
                f"(prompt and completion together); shorten the prompt"
            )
        max_tokens = min(max_tokens or ctx - used, ctx - used)
    out = []
    for i in range(call.n if n is None else n):
        seed = None if call.seed is None else call.seed + i
        out.append(Request(
            messages=base.messages, prompt=base.prompt, prompt_ids=base.prompt_ids,
            max_tokens=max_tokens or DEFAULT_MAX_TOKENS, temperature=call.temperature, top_p=call.top_p,
            seed=seed, stop=call.stop, logprobs=call.logprobs, echo=call.echo,
            meta={"agent": member, "member": member},  # scripted backends reply by agent name
        ))  # fmt: skip
    return out


class Single:
    """A backend served as is (``method: single``): each of the ``n`` choices is one backend call."""

    method = "single"

    def __init__(self, backend: Backend, name: str | None = None, max_model_len: int | None = None) -> None:
        self.backend = backend
        self.name = name or backend.name
        self.max_model_len = max_model_len
        """Prompt + completion tokens allowed (``None``: not checked)."""
        self.logprobs = hasattr(backend, "encode")  # local transformers models compute them

    async def run(self, call: Call) -> Outcome:
        if (call.logprobs is not None or call.echo) and not self.logprobs:
            raise RequestError(f"model {self.name!r} does not offer logprobs or echo (not a local model)")
        start = time.perf_counter()
        replies = await self.backend.generate(
            requests_for(call, self.backend, max_model_len=self.max_model_len, member=self.name)
        )
        failed = [r for r in replies if not r.ok]
        details = {
            "method": "single", "members": [self.name], "failed": [],
            "usage": [member_usage(self.name, r) for r in replies],
            "seconds": round(time.perf_counter() - start, 4),
        }  # fmt: skip
        if failed:
            details["failed"] = [{"member": self.name, "error": failed[0].error}]
            raise FusionFailed(f"model {self.name!r} failed: {failed[0].error}", details)
        choices = [Choice(r.text, r.finish_reason, r.logprobs, r.prompt_text) for r in replies]
        return Outcome(
            choices,
            prompt_tokens=sum(r.prompt_tokens for r in replies),
            completion_tokens=sum(r.completion_tokens for r in replies),
            details=details,
        )

    async def stream(self, call: Call) -> AsyncIterator[Delta | Outcome]:
        """Token by token (local models) or as the remote server streams; with logprobs, one piece."""
        if call.logprobs is not None or call.echo:
            async for item in _whole(self.run(call)):
                yield item
            return
        start, replies = time.perf_counter(), []
        for j, req in enumerate(
            requests_for(call, self.backend, max_model_len=self.max_model_len, member=self.name)
        ):
            reply = Reply(error="no reply")
            async for piece in stream_reply(self.backend, req):
                if isinstance(piece, Reply):
                    reply = piece
                else:
                    yield Delta(j, piece)
            replies.append(reply)
            if not reply.ok:
                raise FusionFailed(f"model {self.name!r} failed: {reply.error}")
            yield Delta(j, "", None, reply.finish_reason)
        yield Outcome(
            [Choice(r.text, r.finish_reason) for r in replies],
            prompt_tokens=sum(r.prompt_tokens for r in replies),
            completion_tokens=sum(r.completion_tokens for r in replies),
            details={
                "method": "single",
                "members": [self.name],
                "failed": [],
                "usage": [member_usage(self.name, r) for r in replies],
                "seconds": round(time.perf_counter() - start, 4),
            },  # fmt: skip
        )

    async def aclose(self) -> None:
        await self.backend.aclose()


async def _whole(work: Any) -> AsyncIterator[Delta | Outcome]:
    """A stream of a finished outcome: each choice's full text as one piece, then the outcome."""
    outcome = await work
    for j, c in enumerate(outcome.choices):
        yield Delta(j, c.text, c.logprobs, c.finish_reason)
    yield outcome


def build(options: Any, model_id: str, backend: Any, configs: dict | None = None) -> Any:
    """The adapter for one model's options (``config.py``); ``backend(name)`` gives a shared backend,
    ``configs`` the serve file's ``BackendConfig`` by name."""
    if options.method == "single":
        b = backend(options.backend)
        limit = (
            options.max_model_len if options.max_model_len is not None else getattr(b, "context_length", None)
        )
        return Single(b, model_id, max_model_len=limit or None)
    if options.method == "ensemble":
        from lmfuse.serve.ensemble_fusion import EnsembleFusion

        return EnsembleFusion(options, model_id)
    from lmfuse.serve import text_fusions

    return text_fusions.build(options, model_id, backend, configs or {})
