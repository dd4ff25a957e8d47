"""Exchange-of-Thought: the round loop, top to bottom.

Round 0: every agent answers alone. If the extracted answers are unanimous and ``early_exit`` is on,
stop. Each later round is synchronous: all prompts are built first from the *previous* round (each
agent's own latest solution and those of the peers it reads, see ``topology``), then every call runs
concurrently; nobody sees a message written in the same round. From round 2 on, peers' confidences are
shown. After a round where all agents agree, stop (``stop_on_unanimity``); at the round cap the answer is
the majority of the last round (``consensus.majority``, ties documented there). A call that fails after
its backend's retries is flagged in ``failures``, its answer counts as not extracted, and the agent's
previous solution stays the one its peers see.
"""

from __future__ import annotations

from collections.abc import Mapping

from lmfuse.backends import Backend, Reply, Request
from lmfuse.exchange import consensus, diversity, prompts, topology
from lmfuse.exchange.answers import extract_answer
from lmfuse.exchange.config import EoTConfig
from lmfuse.exchange.result import ExchangeResult, Solver, call_all
from lmfuse.exchange.transcript import Turn


class EoT(Solver):
    """Runs EoT with ``config``; ``backends`` (name → backend) may be given to reuse loaded models."""

    def __init__(self, config: EoTConfig, backends: Mapping[str, Backend] | None = None) -> None:
        self.config = config
        self.agents = (
            diversity.with_default_personas(config.agents) if config.default_personas else config.agents
        )
        self.names = [a.name for a in config.agents]
        self.reads = topology.resolve(config.topology, self.names)
        super().__init__(config.backends, backends)
        self.warnings = diversity.identical_agents(self.agents)

    async def solve(self, question: str, question_id: str = "q0") -> ExchangeResult:
        """Run the rounds for one question."""
        cfg, n = self.config, len(self.agents)
        texts: list[tuple[str, str | None] | None] = [None] * n  # latest successful (reply, answer)
        history: list[list[str | None]] = [[] for _ in range(n)]
        result = ExchangeResult(question_id, question, None, "no_answer", 0)
        for rnd in range(cfg.max_rounds):
            requests = [self._request(i, rnd, question, question_id, texts, history) for i in range(n)]
            routed = [(a.backend, r) for a, r in zip(self.agents, requests, strict=True)]
            replies = await call_all(self.backends, routed)
            answers = self._record(result, rnd, requests, replies, texts, history)
            result.rounds = rnd + 1
            if consensus.unanimous(answers) and (cfg.early_exit if rnd == 0 else cfg.stop_on_unanimity):
                result.answer, result.stop = answers[0], "early_exit" if rnd == 0 else "unanimous"
                return self._final_text(result)
        result.answer = consensus.majority(result.answers[-1], result.confidences[-1])
        result.stop = "majority" if result.answer is not None else "no_answer"
        return self._final_text(result)

    def _final_text(self, result: ExchangeResult) -> ExchangeResult:
        """Full text of the last round's reply of the lowest-indexed agent with the final answer."""
        if result.answer is not None:
            last = result.turns[-len(self.agents) :]
            turn = next(t for t in last if t.answer == result.answer)
            result.text, result.finish_reason = turn.reply, turn.finish_reason
        return result

    def _shown(self, j: int, texts, history, with_confidence: bool) -> prompts.Shown | None:
        if texts[j] is None:
            return None
        conf = consensus.confidence(history[j]) if with_confidence else None
        return prompts.Shown(self.names[j], texts[j][0], texts[j][1], conf)

    def _request(self, i: int, rnd: int, question: str, qid: str, texts, history) -> Request:
        agent = self.agents[i]
        if rnd == 0:
            kwargs = prompts.eot_initial(agent, question)
        else:
            show_conf = self.config.show_confidence and rnd >= 2
            own = self._shown(i, texts, history, False)
            peers = [s for j in self.reads[i] if (s := self._shown(j, texts, history, show_conf))]
            kwargs = prompts.eot_exchange(agent, question, own, peers)
        meta = {"question_id": qid, "agent": agent.name, "round": rnd}
        meta["reads"] = [] if rnd == 0 else [self.names[j] for j in self.reads[i] if texts[j] is not None]
        return Request(
            model=agent.model, max_tokens=agent.max_tokens, temperature=agent.temperature, meta=meta, **kwargs
        )

    def _record(self, result: ExchangeResult, rnd: int, requests, replies: list[Reply], texts, history):
        answers: list[str | None] = []
        for i, (req, rep) in enumerate(zip(requests, replies, strict=True)):
            ans = extract_answer(rep.text, self.config.answer_kind) if rep.ok else None
            if rep.ok:
                texts[i] = (rep.text, ans)
            else:
                result.failures.append(f"round {rnd}, agent {self.names[i]}: {rep.error}")
            history[i].append(ans)
            answers.append(ans)
            conf = consensus.confidence(history[i])
            result.turns.append(
                Turn.of(result.question_id, rnd, self.names[i], req, rep, ans, conf, req.meta["reads"])
            )
        result.answers.append(answers)
        result.confidences.append([consensus.confidence(h) for h in history])
        return answers
