"""Mixture-of-Agents: layers of proposers, each reading the previous layer's answers, then an aggregator.

Layer 0's proposers answer the question alone; each later layer's proposers get every successful answer
of the layer before as numbered references with lmfuse's aggregate-and-synthesize instruction; the
aggregator gets the last layer's answers the same way and its reply is the answer. ``layer_max_tokens``
caps each proposer layer. A proposer that fails is flagged in ``failures`` and its slot in ``answers``
is ``None``; if a whole layer fails, the next one reads the last layer that produced anything, and if
no layer did, the question is ``failed``. The one-shot "three answers as references for a fourth" is
MoA with one layer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from lmfuse.backends import Backend, Request, build_backend
from lmfuse.exchange import prompts
from lmfuse.exchange.answers import extract_answer
from lmfuse.exchange.config import AgentConfig, MoAConfig
from lmfuse.exchange.result import ExchangeResult, call_all
from lmfuse.exchange.transcript import Turn


class MoA:
    """Runs MoA with ``config``; ``backends`` (name → backend) may be given to reuse loaded models."""

    def __init__(self, config: MoAConfig, backends: Mapping[str, Backend] | None = None) -> None:
        self.config = config
        self.backends = dict(backends or {})
        for name, bc in config.backends.items():
            if name not in self.backends:
                self.backends[name] = build_backend(bc, name)

    async def solve(self, question: str, question_id: str = "q0") -> ExchangeResult:
        """Run every layer, then the aggregator, for one question."""
        cfg = self.config
        result = ExchangeResult(question_id, question, None, "failed", len(cfg.layers) + 1)
        references: list[prompts.Shown] = []
        for k, layer in enumerate(cfg.layers):
            cap = cfg.layer_max_tokens[k] if cfg.layer_max_tokens else None
            shown = await self._layer(result, k, layer, question, references, cap, final=False)
            references = shown or references
        if not references:
            return result
        final = await self._layer(result, len(cfg.layers), [cfg.aggregator], question, references, None, True)
        if final:
            result.answer, result.stop = final[0].answer, "aggregated"
        return result

    async def _layer(
        self, result: ExchangeResult, k: int, agents: list[AgentConfig], question: str,
        references: list[prompts.Shown], cap: int | None, final: bool,
    ) -> list[prompts.Shown]:  # fmt: skip
        """Call one layer concurrently; record turns; return its successful answers as references."""
        requests = []
        for a in agents:
            kwargs = prompts.moa_prompt(a, question, references, final)
            meta = {"question_id": result.question_id, "agent": a.name, "round": k}
            max_tokens = min(a.max_tokens, cap) if cap else a.max_tokens
            requests.append(
                Request(model=a.model, max_tokens=max_tokens, temperature=a.temperature, meta=meta, **kwargs)
            )
        replies = await call_all(
            self.backends, [(a.backend, r) for a, r in zip(agents, requests, strict=True)]
        )
        shown, answers = [], []
        for a, req, rep in zip(agents, requests, replies, strict=True):
            ans = extract_answer(rep.text, self.config.answer_kind) if rep.ok else None
            answers.append(ans)
            if rep.ok:
                shown.append(prompts.Shown(a.name, rep.text, ans))
            else:
                role = "aggregator" if final else f"layer {k} proposer"
                result.failures.append(f"{role} {a.name}: {rep.error}")
            result.turns.append(
                Turn(
                    result.question_id,
                    k,
                    a.name,
                    req.as_text(),
                    rep.text,
                    ans,
                    None,
                    [r.author for r in references],
                    rep.prompt_tokens,
                    rep.completion_tokens,
                    rep.seconds,
                    rep.attempts,
                    rep.error,
                )  # fmt: skip
            )
        result.answers.append(answers)
        return shown

    def run(self, question: str, question_id: str = "q0") -> ExchangeResult:
        """Blocking form of ``solve`` (not inside a running event loop)."""

        async def go() -> ExchangeResult:
            try:
                return await self.solve(question, question_id)
            finally:
                await self.aclose()

        return asyncio.run(go())

    async def aclose(self) -> None:
        await asyncio.gather(*(b.aclose() for b in self.backends.values()))
