"""``vote``, ``moa`` and ``eot`` served as one model: each asks its members through ``members.Recorded``
(per-call timeout, every call recorded), applies the quorum, and answers with a member's full text.

Vote calls ``lmfuse.vote.vote``; MoA and EoT call ``MoA(config, backends).solve`` /
``EoT(config, backends).solve`` with the recorded wrappers as backends, so the server sees each call's
full reply and ``finish_reason`` (``ExchangeResult`` holds extracted answers; ``Turn.reply`` the text).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from typing import Any

from lmfuse.backends.base import Backend, Reply, Request
from lmfuse.serve.fusion import Call, Choice, Delta, FusionFailed, Outcome, RequestError
from lmfuse.serve.fusions import requests_for
from lmfuse.serve.members import Recorded, member_seed, split, usage_of

Calls = list[tuple[str, Request, Reply]]


def _cut(text: str, stop: list[str] | None) -> tuple[str, bool]:
    """``text`` up to the first stop string (members of MoA/EoT are not sent the stops)."""
    cut = False
    for s in stop or []:
        if s in text:
            text, cut = text.split(s, 1)[0], True
    return text, cut


def question_of(call: Call) -> str:
    """The question MoA/EoT solve: the prompt, the one user message, or the whole conversation."""
    if isinstance(call.prompt, list):
        raise RequestError("token-id prompts are only for single models; send text")
    if call.prompt is not None:
        return call.prompt
    msgs = call.messages or []
    if len(msgs) == 1 and msgs[0]["role"] == "user":
        return msgs[0]["content"]
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in msgs)


class _Fused:
    """What the three share: ``n`` independent fusions, merged into one outcome."""

    method = "?"
    logprobs = False

    def __init__(self, options: Any, model_id: str, backends: dict[str, Backend]) -> None:
        self.options, self.name, self.backends = options, model_id, backends

    def wrap(
        self, calls: Calls, member: Callable[[Request], str], tap=None, adjust=None
    ) -> dict[str, Recorded]:
        return {
            n: Recorded(b, member, self.options.timeout, calls, tap, adjust) for n, b in self.backends.items()
        }

    def failed(self, ok: list[str], failed: list[dict], need: int, calls: Calls, extra: dict) -> FusionFailed:
        names = ", ".join(f"{f['member']} ({f['error']})" for f in failed)
        p, c, rows = usage_of(calls)
        details = {"method": self.method, "members": ok, "failed": failed, "usage": rows, **extra}
        return FusionFailed(
            f"model {self.name!r}: {len(ok)} of {len(ok) + len(failed)} members answered, quorum is {need}; "
            f"failed: {names}", details,
        )  # fmt: skip

    def outcome(
        self, choice: Choice, calls: Calls, ok: list[str], failed: list[dict], extra: dict
    ) -> Outcome:
        p, c, rows = usage_of(calls)
        details = {"method": self.method, "members": ok, "failed": failed, "usage": rows, self.method: extra}
        return Outcome([choice], p, c, details)

    async def once(self, call: Call, j: int, sink: Callable[[str], None] | None) -> Outcome:
        raise NotImplementedError

    async def run(self, call: Call) -> Outcome:
        if call.n == 1:  # no task for a lone fusion
            return await self.once(call, 0, None)
        outs = await asyncio.gather(*(self.once(_choice(call, j), j, None) for j in range(call.n)))
        return merge(list(outs))

    async def stream(self, call: Call) -> AsyncIterator[Delta | Outcome]:
        outcome = await self.run(call)
        for j, c in enumerate(outcome.choices):
            yield Delta(j, c.text, None, c.finish_reason)
        yield outcome

    async def aclose(self) -> None:
        await asyncio.gather(*(b.aclose() for b in self.backends.values()))


def _choice(call: Call, j: int) -> Call:
    """Choice ``j`` of a seeded call gets its own seeds."""
    return call if call.seed is None else dataclasses.replace(call, seed=call.seed + 1000 * j)


def merge(outs: list[Outcome]) -> Outcome:
    """``n`` one-choice outcomes → one: choices in order, usage summed, details per choice."""
    if len(outs) == 1:
        return outs[0]
    d0 = outs[0].details
    details = {"method": d0.get("method"), "members": sorted({m for o in outs for m in o.details["members"]}),
               "failed": [f for o in outs for f in o.details["failed"]],
               "usage": [u for o in outs for u in o.details["usage"]],
               "choices": [{k: v for k, v in o.details.items() if k not in ("usage",)} for o in outs]}  # fmt: skip
    return Outcome([o.choices[0] for o in outs], sum(o.prompt_tokens for o in outs),
                   sum(o.completion_tokens for o in outs), details)  # fmt: skip


class VoteFusion(_Fused):
    """Every member answers (``samples`` times); the reply most similar to the others wins, in full."""

    method = "vote"

    def __init__(self, options: Any, model_id: str, backends: dict[str, Backend]) -> None:
        super().__init__(options, model_id, backends)
        self.similarities = options.similarities()

    async def once(self, call: Call, j: int, sink: Callable[[str], None] | None) -> Outcome:
        from lmfuse.vote import vote

        opts, calls = self.options, []
        wrapped = self.wrap(calls, lambda r: r.meta["member"])
        jobs = []
        for name in opts.members:  # each member its own seeds (samples: seed, seed + 1, ...)
            own = call if call.seed is None else dataclasses.replace(call, seed=member_seed(call.seed, name))
            reqs = requests_for(own, self.backends[name], n=opts.samples, member=name)
            jobs.append(wrapped[name].generate(reqs))
        await asyncio.gather(*jobs)
        ok, failed = split(calls, opts.members)
        need = opts.need(len(opts.members))
        if len(ok) < need:
            raise self.failed(ok, failed, need, calls, {})
        order = {n: i for i, n in enumerate(opts.members)}
        cands = sorted([(m, r) for m, _, r in calls if r.ok], key=lambda c: order[c[0]])
        weights = None if opts.member_weights is None else [opts.member_weights[order[m]] for m, _ in cands]
        res = vote([r.text for _, r in cands], self.similarities, opts.weights, normalize=opts.normalize,
                   candidate_weights=weights)  # fmt: skip
        index = res.index if res.index is not None else 0  # no candidate had an answer: the first reply
        member, reply = cands[index]
        extra = {"winner": member, "winner_index": res.index, "scores": res.scores, "margin": res.margin,
                 "tie": res.tie, "candidates": [m for m, _ in cands]}  # fmt: skip
        if res.answers is not None:
            extra["answers"] = res.answers
        return self.outcome(Choice(reply.text, reply.finish_reason), calls, ok, failed, extra)


def _agent_name(r: Request) -> str:
    return str(r.meta.get("agent", "?"))


class _Exchange(_Fused):
    """MoA and EoT: a per-request copy of the exchange recipe with the request's temperature and
    ``max_tokens``, solved by the method's public class over the recorded wrappers; every member call
    also gets the request's ``top_p`` and a seed of its own (``member_seed`` of agent and round), and
    the calls of round ``stop_round`` (the MoA aggregator) its ``stop`` strings."""

    def __init__(self, options: Any, model_id: str, backends: dict[str, Backend], config: Any) -> None:
        super().__init__(options, model_id, backends)
        self.config = config

    @staticmethod
    def adjust(call: Call, stop_round: int | None) -> Callable[[Request], Request]:
        def sent(r: Request) -> Request:
            rnd = r.meta.get("round")
            stop = call.stop if stop_round is not None and rnd == stop_round else r.stop
            return dataclasses.replace(r, top_p=call.top_p, stop=stop,
                                       seed=member_seed(call.seed, r.meta.get("agent"), rnd))  # fmt: skip

        return sent

    def recipe(self, call: Call) -> Any:
        def agent(a: Any) -> Any:
            return dataclasses.replace(
                a, temperature=call.temperature, max_tokens=call.max_tokens or a.max_tokens
            )

        cfg = self.config
        if hasattr(cfg, "layers"):
            return dataclasses.replace(cfg, layers=[[agent(a) for a in layer] for layer in cfg.layers],
                                       aggregator=agent(cfg.aggregator))  # fmt: skip
        return dataclasses.replace(cfg, agents=[agent(a) for a in cfg.agents])


class MoAFusion(_Exchange):
    """Proposer layers, then the aggregator, whose full reply is the answer (streamed as it comes)."""

    method = "moa"

    async def once(self, call: Call, j: int, sink: Callable[[str], None] | None) -> Outcome:
        from lmfuse.exchange.moa import MoA

        cfg, calls = self.recipe(call), []
        final = len(cfg.layers)
        tap = None if sink is None else (lambda r: sink if r.meta.get("round") == final else None)
        wrapped = self.wrap(calls, _agent_name, tap, self.adjust(call, final))
        result = await MoA(cfg, wrapped).solve(question_of(call), f"choice-{j}")
        proposers = [a.name for a in cfg.layers[0]]
        ok, failed = split([c for c in calls if c[1].meta.get("round") == 0], proposers)
        agg = [(m, r) for m, q, r in calls if q.meta.get("round") == final]
        need = self.options.need(len(proposers))
        extra = {"answer": result.answer, "stop": result.stop}
        if self.options.details or call.details:
            extra["layers"] = result.answers
        if len(ok) < need or not agg or not agg[0][1].ok:
            if agg and not agg[0][1].ok:
                failed.append({"member": agg[0][0], "error": agg[0][1].error or "failed"})
            raise self.failed(ok, failed, need, calls, {"moa": extra})
        reply = agg[0][1]
        text, cut = _cut(reply.text, call.stop)
        return self.outcome(Choice(text, "stop" if cut else reply.finish_reason), calls, ok, failed, extra)

    async def stream(self, call: Call) -> AsyncIterator[Delta | Outcome]:
        """The aggregator's tokens as they are generated (choice after choice)."""
        outs = []
        for j in range(call.n):
            queue: asyncio.Queue = asyncio.Queue()
            job = asyncio.ensure_future(self.once(_choice(call, j), j, queue.put_nowait))
            job.add_done_callback(lambda _, q=queue: q.put_nowait(None))
            sent = ""
            try:
                while (piece := await queue.get()) is not None:
                    allowed, _ = _cut(sent + piece, call.stop)
                    if len(allowed) > len(sent):
                        yield Delta(j, allowed[len(sent) :])
                        sent = allowed
                out = await job
            finally:
                job.cancel()
            rest = out.choices[0].text[len(sent) :] if out.choices[0].text.startswith(sent) else ""
            yield Delta(j, rest, None, out.choices[0].finish_reason)
            outs.append(out)
        yield merge(outs)


class EoTFusion(_Exchange):
    """Rounds of exchange; the answer is the full last reply of an agent holding the final answer."""

    method = "eot"

    async def once(self, call: Call, j: int, sink: Callable[[str], None] | None) -> Outcome:
        from lmfuse.exchange.eot import EoT

        cfg, calls = self.recipe(call), []
        wrapped = self.wrap(calls, _agent_name, adjust=self.adjust(call, None))  # every reply is read
        result = await EoT(cfg, wrapped).solve(question_of(call), f"choice-{j}")
        names = [a.name for a in cfg.agents]
        ok, failed = split(calls, names)
        need = self.options.need(len(names))
        extra: dict[str, Any] = {"answer": result.answer, "stop": result.stop, "rounds": result.rounds}
        if self.options.details or call.details:
            extra["answers"] = result.answers
        if len(ok) < need:
            raise self.failed(ok, failed, need, calls, {"eot": extra})
        last = [t for t in result.turns if t.round == result.rounds - 1 and t.error is None]
        pick = next((t for t in last if t.answer == result.answer), last[0] if last else None)
        if pick is None:
            raise self.failed(ok, failed, need, calls, {"eot": extra})
        reply = next(r for m, q, r in calls if m == pick.agent and q.meta.get("round") == pick.round)
        extra["from"] = pick.agent
        text, cut = _cut(reply.text, call.stop)
        return self.outcome(Choice(text, "stop" if cut else reply.finish_reason), calls, ok, failed, extra)


def build(options: Any, model_id: str, backend: Callable[[str], Backend], configs: dict) -> _Fused:
    """The vote / MoA / EoT adapter of ``options`` over the shared backends ``backend(name)``;
    ``configs``: the serve file's ``BackendConfig`` by name (for the exchange recipe)."""
    if options.method == "vote":
        return VoteFusion(options, model_id, {n: backend(n) for n in options.members})
    cfg = options.exchange_config(configs)
    agents = (
        [a for layer in cfg.layers for a in layer] + [cfg.aggregator]
        if hasattr(cfg, "layers")
        else cfg.agents
    )
    used = {a.backend for a in agents}
    cfg = dataclasses.replace(cfg, backends={n: b for n, b in cfg.backends.items() if n in used})
    cls = MoAFusion if options.method == "moa" else EoTFusion
    return cls(options, model_id, {n: backend(n) for n in cfg.backends}, cfg)
