"""``ensemble`` served as one model: ``lmfuse.ensemble.Ensemble`` decoding its members as one.

``Ensemble.complete`` answers (finish reason, token counts, log-probs of the combined distribution);
``Ensemble.stream`` streams step by step as each step is committed. Decoding runs in a worker thread,
one request at a time (the members are torch models in this process); a client that leaves stops the
decode after the step in flight.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

from lmfuse.backends.base import TokenLogprobs
from lmfuse.serve.fusion import Call, Choice, Delta, Outcome, RequestError

DEFAULT_MAX_TOKENS = 256


def _logprobs(tokens: list[str], logprobs: list[float], top: list[list[tuple[str, float]]]) -> TokenLogprobs:
    """The combined distribution's log-probs in the server's shape (steps have no single token id)."""
    return TokenLogprobs(
        [-1] * len(tokens), list(tokens), list(logprobs), [[(-1, s, v) for s, v in t] for t in top]
    )


class EnsembleFusion:
    method = "ensemble"
    logprobs = True
    token_ids = False
    """Steps of a cross-tokenizer ensemble have no one token id: no ``echo`` or token-id prompts."""

    def __init__(self, options: Any, model_id: str) -> None:
        from lmfuse.ensemble import Ensemble

        self.options, self.name = options, model_id
        self.ensemble = Ensemble(options.members, weights=options.weights, combine=options.combine,
                                 align=options.align, union_top_k=options.union_top_k, gate=options.gate,
                                 dtype=options.dtype)  # fmt: skip
        self.lock = asyncio.Lock()
        self.templated = all(getattr(m.tokenizer, "chat_template", None) for m in self.ensemble.members)

    def _prompt(self, call: Call) -> tuple[str | list[dict], bool]:
        """The prompt, and whether the members' chat templates apply."""
        if isinstance(call.prompt, list) or call.echo:
            raise RequestError(f"model {self.name!r} (ensemble) takes text prompts without echo")
        if call.prompt is not None:
            return call.prompt, False
        if self.templated:
            return list(call.messages or []), True
        return "\n".join(m["content"] for m in call.messages or []), False  # as the hf backend does

    def _options(self, call: Call) -> tuple[str | list[dict], dict[str, Any]]:
        prompt, chat = self._prompt(call)
        limit = self.options.max_model_len
        max_new = call.max_tokens or DEFAULT_MAX_TOKENS
        if limit:
            text = prompt if isinstance(prompt, str) else "\n".join(m["content"] for m in prompt)
            used = len(self.ensemble.members[0].tokenizer(text)["input_ids"])
            if used >= limit:
                raise RequestError(f"the prompt is {used} tokens; model {self.name!r} takes at most {limit}")
            max_new = min(max_new, limit - used)
        kw = dict(max_new_tokens=max_new, temperature=call.temperature, top_p=call.top_p, stop=call.stop,
                  seed=call.seed, chat=chat, logprobs=call.logprobs or 0)  # fmt: skip
        return prompt, kw

    def _details(self, start: float) -> dict[str, Any]:
        e = self.ensemble
        return {"method": "ensemble", "members": [m.name for m in e.members], "failed": [],
                "seconds": round(time.perf_counter() - start, 4),
                "ensemble": {"weights": list(e.weights), "combine": e.combine,
                             "ensembled_fraction": e.stats.ensembled_fraction}}  # fmt: skip

    async def run(self, call: Call) -> Outcome:
        prompt, kw = self._options(call)
        start = time.perf_counter()
        async with self.lock:
            done = await asyncio.to_thread(self.ensemble.complete, [prompt] * call.n, **kw)
        want = call.logprobs is not None
        choices = [Choice(c.text, c.finish_reason,
                          _logprobs(c.tokens, c.token_logprobs, c.top_logprobs) if want else None) for c in done]  # fmt: skip
        return Outcome(choices, sum(c.prompt_tokens for c in done), sum(c.completion_tokens for c in done),
                       self._details(start))  # fmt: skip

    async def stream(self, call: Call) -> AsyncIterator[Delta | Outcome]:
        """Each committed step as a piece (choice after choice); seeds as ``complete`` uses them."""
        prompt, kw = self._options(call)
        start, choices, ptoks, ctoks = time.perf_counter(), [], 0, 0
        want = call.logprobs is not None
        async with self.lock:
            for j in range(call.n):
                seed = None if call.seed is None else call.seed + j
                parts, steps = [], 0
                finish = "stop"
                async for chunk in _in_thread(
                    lambda s=seed: self.ensemble.stream(prompt, **{**kw, "seed": s})
                ):
                    steps += 1
                    parts.append(chunk.text)
                    finish = chunk.finish_reason or finish
                    lp = _logprobs([chunk.text], [chunk.logprob], [chunk.top_logprobs]) if want else None
                    yield Delta(j, chunk.text, lp, chunk.finish_reason)
                choices.append(Choice("".join(parts), finish))
                ctoks += steps
                ptoks += self._prompt_tokens(prompt)
        yield Outcome(choices, ptoks, ctoks, self._details(start))

    def _prompt_tokens(self, prompt: str | list[dict]) -> int:
        text = prompt if isinstance(prompt, str) else "\n".join(m["content"] for m in prompt)
        return len(self.ensemble.members[0].tokenizer(text)["input_ids"])

    async def aclose(self) -> None:
        return None


async def _in_thread(make: Any) -> AsyncIterator[Any]:
    """Iterate the blocking iterator ``make()`` in a worker thread; leaving early stops it."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    stop = threading.Event()
    end = object()

    def work() -> None:
        try:
            for item in make():
                loop.call_soon_threadsafe(queue.put_nowait, item)
                if stop.is_set():
                    break
            loop.call_soon_threadsafe(queue.put_nowait, end)
        except BaseException as exc:  # handed to the consumer
            loop.call_soon_threadsafe(queue.put_nowait, exc)

    job = loop.run_in_executor(None, work)
    try:
        while (item := await queue.get()) is not end:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        await asyncio.shield(job)
