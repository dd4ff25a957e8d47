"""Mixture-of-Agents: layers of proposers, each reading the previous layer's answers, then an aggregator.

Layer 0's proposers answer the question alone; each later layer's proposers get every successful answer
of the layer before as numbered references with lmfuse's aggregate-and-synthesize instruction; the
aggregator gets the last layer's answers the same way and its reply is the answer: ``text`` holds it in
full (open-ended prompts), ``answer`` what ``answer_kind`` extracts from it (``text``: all of it). ``layer_max_tokens``
caps each proposer layer. A proposer that fails is flagged in ``failures`` and its slot in ``answers``
is ``None``; if a whole layer fails, the next one reads the last layer that produced anything, and if
no layer did, the question is ``failed``. The one-shot "three answers as references for a fourth" is
MoA with one layer.
"""

from __future__ import annotations

from collections.abc import Mapping

from lmfuse.backends import Backend, Request
from lmfuse.exchange import diversity, prompts
from lmfuse.exchange.answers import extract_answer
from lmfuse.exchange.config import AgentConfig, MoAConfig
from lmfuse.exchange.result import ExchangeResult, Solver, call_all
from lmfuse.exchange.transcript import Turn


class MoA(Solver):
    """Runs MoA with ``config``; ``backends`` (name → backend) may be given to reuse loaded models."""

    def __init__(self, config: MoAConfig, backends: Mapping[str, Backend] | None = None) -> None:
        self.config = config
        super().__init__(config.backends, backends)
        for k, layer in enumerate(config.layers):
            self.warnings += diversity.identical_agents(layer, f" (layer {k})")

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
            result.text, result.finish_reason = final[0].text, result.turns[-1].finish_reason
        return result

    async def _layer(
        self, result: ExchangeResult, k: int, agents: list[AgentConfig], question: str,
        references: list[prompts.Shown], cap: int | None, final: bool,
    ) -> list[prompts.Shown]:  # fmt: skip
        """Call one layer concurrently; record turns; return its successful answers as references."""
        requests = []
        for a in agents:
            kwargs = prompts.moa_prompt(a, question, references, final, self.config.answer_kind != "text")
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
            reads = [r.author for r in references]
            result.turns.append(Turn.of(result.question_id, k, a.name, req, rep, ans, None, reads))
        result.answers.append(answers)
        return shown
