"""Prompts of EoT and MoA, in two formats.

``chat`` (real chat models): messages with the agent's persona as system prompt.

``qa_lines`` (zoo-style completion models, ``Q: 37+48= A:`` then a scratchpad): a completion prompt
where every solution the agent is shown becomes one solved line of the same question, the question then
the solution's text (whitespace runs, newlines included, folded to one space), followed by the open
question: ``"Q: 37+48= A: 7+8=15,3+4+1=8 so 85\\nQ: 37+48= A: 7+8=15,3+4+0=7 so 75\\nQ: 37+48= A:"``.
The agent's own latest solution comes first, then its peers' in agent order; solutions with no
extracted answer are left out; confidences are not shown. The zoo's members are trained on such
prompts (``lmfuse.zoo.training_data``), so they read their peers' working, not only their answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lmfuse.exchange.config import AgentConfig

FINISH = 'Think step by step, then end with "The answer is X".'
CONFIDENCE_NOTE = (
    "An agent's confidence is the share of its answers so far that agree with its most frequent one; "
    "a confidence below 0.5 suggests its solution may be wrong."
)
SYNTHESIZE = (
    "Below are answers from several models to the user's question. Some may be wrong, incomplete or "
    "biased. Examine them critically, keep what is correct, fix what is not, and write one accurate, "
    "self-contained answer of your own rather than copying any of them."
)


@dataclass
class Shown:
    """A solution shown in a prompt: who wrote it, its text, its extracted answer, maybe a confidence."""

    author: str
    text: str
    answer: str | None
    confidence: float | None = None


def _messages(agent: AgentConfig, user: str, extra_system: str = "") -> list[dict[str, str]]:
    system = "\n\n".join(s for s in (agent.system or "", extra_system) if s)
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]


def qa_lines(question: str, shown: Sequence[Shown]) -> str:
    """The ``qa_lines`` prompt: one solved line per shown solution, then the open question (module doc)."""
    lines = [f"{question} {' '.join(s.text.split())}" for s in shown if s.answer is not None]
    return "\n".join([*lines, question])


def eot_initial(agent: AgentConfig, question: str) -> dict:
    """Round 0: the agent answers alone. Returns ``Request`` keyword arguments (messages or prompt)."""
    if agent.prompt_format == "qa_lines":
        return {"prompt": question}
    return {"messages": _messages(agent, f"{question}\n\n{FINISH}")}


def eot_exchange(agent: AgentConfig, question: str, own: Shown | None, peers: Sequence[Shown]) -> dict:
    """Round r >= 1: the question, the agent's own latest solution, then its peers' latest solutions."""
    if agent.prompt_format == "qa_lines":
        return {"prompt": qa_lines(question, ([own] if own else []) + list(peers))}
    parts = [question]
    if own is not None:
        parts.append(f"Your previous solution:\n{own.text}")
    if peers:
        blocks = []
        for p in peers:
            conf = f" (confidence {p.confidence:.2f})" if p.confidence is not None else ""
            blocks.append(f"Solution of agent {p.author}{conf}:\n{p.text}")
        parts.append("Solutions from other agents:\n\n" + "\n\n".join(blocks))
        if any(p.confidence is not None for p in peers):
            parts.append(CONFIDENCE_NOTE)
    parts.append(f"Use these solutions as additional information and solve the problem again. {FINISH}")
    return {"messages": _messages(agent, "\n\n".join(parts))}


def moa_prompt(
    agent: AgentConfig, question: str, references: Sequence[Shown], final: bool, answer_hint: bool = True
) -> dict:
    """A proposer of layer 0 (no references), of a later layer, or the aggregator (``final``).

    The aggregator is also asked to end with "The answer is X" for short answers (lmfuse's addition,
    not MoA's, so that an answer can be extracted); ``answer_hint=False`` (answer kind ``text``) drops it.
    """
    if agent.prompt_format == "qa_lines":
        return {"prompt": qa_lines(question, references)}
    if not references:
        return {"messages": _messages(agent, question)}
    numbered = "\n\n".join(f"[{i + 1}] {r.text}" for i, r in enumerate(references))
    tail = (
        ' End with "The answer is X" when the question has a short answer.' if final and answer_hint else ""
    )
    return {"messages": _messages(agent, question, f"{SYNTHESIZE}{tail}\n\nAnswers:\n\n{numbered}")}
