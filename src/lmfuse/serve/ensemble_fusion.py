"""``ensemble`` served as one model: ``lmfuse.ensemble.Ensemble`` decoding its members as one.

Generation runs in a worker thread, one request at a time (the members are torch models in this
process). Built on ``Ensemble.generate``: no streaming by token and no logprobs yet (those come with
``Ensemble.complete`` / ``Ensemble.stream``); usage is counted with the lead member's tokenizer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from lmfuse.serve.fusion import Call, Choice, Delta, Outcome, RequestError

DEFAULT_MAX_TOKENS = 256


class EnsembleFusion:
    method = "ensemble"
    logprobs = False

    def __init__(self, options: Any, model_id: str) -> None:
        from lmfuse.ensemble import Ensemble

        self.options, self.name = options, model_id
        self.ensemble = Ensemble(options.members, weights=options.weights, combine=options.combine,
                                 align=options.align, union_top_k=options.union_top_k, gate=options.gate,
                                 dtype=options.dtype)  # fmt: skip
        self.lock = asyncio.Lock()

    def _prompt(self, call: Call) -> tuple[str, bool]:
        """The prompt and whether the members' chat templates apply (one user message)."""
        if isinstance(call.prompt, list):
            raise RequestError("token-id prompts are only for single models; send text")
        if call.prompt is not None:
            return call.prompt, False
        msgs = call.messages or []
        templated = all(getattr(m.tokenizer, "chat_template", None) for m in self.ensemble.members)
        if templated and len(msgs) == 1 and msgs[0]["role"] == "user":
            return msgs[0]["content"], True
        return "\n".join(m["content"] for m in msgs), False  # as the hf backend does without a template

    def _tokens(self, text: str, special: bool) -> int:
        tok = self.ensemble.members[0].tokenizer
        return len(tok(text, add_special_tokens=special)["input_ids"])

    async def run(self, call: Call) -> Outcome:
        prompt, chat = self._prompt(call)
        used = self._tokens(prompt, True)
        limit = self.options.max_model_len
        if limit and used >= limit:
            raise RequestError(
                f"the prompt is {used} tokens; model {self.name!r} takes at most {limit} tokens"
            )
        max_new = call.max_tokens or DEFAULT_MAX_TOKENS
        if limit:
            max_new = min(max_new, limit - used)
        start = time.perf_counter()
        async with self.lock:
            texts = await asyncio.to_thread(
                self.ensemble.generate, [prompt] * call.n, max_new_tokens=max_new, temperature=call.temperature,
                top_p=call.top_p, stop=call.stop, seed=call.seed, chat=chat,
            )  # fmt: skip
        counts = [self._tokens(t, False) for t in texts]
        choices = [
            Choice(t, "length" if c >= max_new else "stop") for t, c in zip(texts, counts, strict=True)
        ]
        members = [m.name for m in self.ensemble.members]
        details = {"method": "ensemble", "members": members, "failed": [],
                   "seconds": round(time.perf_counter() - start, 4),
                   "ensemble": {"weights": list(self.ensemble.weights), "combine": self.ensemble.combine,
                                "ensembled_fraction": self.ensemble.stats.ensembled_fraction}}  # fmt: skip
        return Outcome(choices, used * call.n, sum(counts), details)

    async def stream(self, call: Call) -> AsyncIterator[Delta | Outcome]:
        outcome = await self.run(call)
        for j, c in enumerate(outcome.choices):
            yield Delta(j, c.text, None, c.finish_reason)
        yield outcome

    async def aclose(self) -> None:
        return None
