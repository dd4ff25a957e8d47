"""Training examples of the zoo: scratchpad solutions, some after other solutions to read (peer reading).

A plain example is a question's prompt and its scratchpad (``Question.text``). A peer-reading example
puts 1-5 solved lines of the same question before it, in the ``qa_lines`` format that EoT and MoA use
for zoo agents (``lmfuse.exchange.prompts.qa_lines``):
``"Q: 37+48= A: 7+8=15,3+4+1=8 so 85\\nQ: 37+48= A: 7+8=15,3+4+0=7 so 75\\nQ: 37+48= A:"``.
The shown solutions are right or wrong; wrong ones carry the slips a zoo model makes (a units or tens
step off by one or two, a dropped or extra carry or borrow), the later steps following from the slip,
sometimes repeated as correlated members repeat them. The target is always the correct scratchpad, so a
model learns to weigh what it reads against its own working. Held-out questions (``held_out_pairs``)
are never drawn.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass

from lmfuse.zoo.questions import OPS, Question, held_out_pairs, sample_question, scratchpad

MAX_SHOWN = 5
"""At most this many solved lines before the question (an EoT agent of five sees its own and 4 peers')."""


def wrong_solution(q: Question, rng: random.Random) -> str:
    """A plausible wrong scratchpad for ``q``: one step slipped, the rest following from it."""
    right = int(q.answer)
    while True:
        kind = rng.randrange(3)
        delta = rng.choice((-1, 1, -2, 2) if kind != 1 else (-1, 1))
        slips = [0, 0, 0]
        slips[kind] = delta
        text, value = scratchpad(q.op, q.a, q.b, *slips)
        if value is not None and value != right:
            return text


def shown_solutions(q: Question, rng: random.Random, k: int) -> list[str]:
    """``k`` solutions to show before ``q``: each right with a per-example chance drawn in [0.2, 0.9]."""
    p_right = rng.uniform(0.2, 0.9)
    shown: list[str] = []
    wrong: list[str] = []
    for _ in range(k):
        if rng.random() < p_right:
            shown.append(q.solution)
        elif wrong and rng.random() < 0.4:  # correlated members repeat the same slip
            shown.append(rng.choice(wrong))
        else:
            wrong.append(wrong_solution(q, rng))
            shown.append(wrong[-1])
    return shown


def peer_prompt(q: Question, solutions: list[str]) -> str:
    """``q``'s prompt after solved lines, exactly as an EoT/MoA ``qa_lines`` agent is shown its peers."""
    from lmfuse.exchange.prompts import Shown, qa_lines
    from lmfuse.vote.extract import extract_number

    return qa_lines(q.prompt, [Shown(f"peer{i}", t, extract_number(t)) for i, t in enumerate(solutions)])


@dataclass
class ExampleStream:
    """A seeded source of ``(prompt, completion)`` training pairs, drawn a batch at a time.

    ``mix`` weights the operations; ``peer_share`` is the share of peer-reading batches. A batch is all
    plain or all peer-reading with one number of shown lines, so its rows have about one length (padding
    a plain row to a five-line prompt would triple its cost).
    """

    mix: Mapping[str, float]
    peer_share: float
    seed: int
    exclude: frozenset[tuple[str, int, int]] = frozenset()
    """(op, a, b) never drawn, besides the held-out set (e.g. a validation set)."""

    def __post_init__(self) -> None:
        unknown = sorted(set(self.mix) - set(OPS))
        if unknown:
            raise ValueError(f"mix: expected operations among {', '.join(OPS)}, found {unknown}")
        self.rng = random.Random(self.seed)
        self.excluded = held_out_pairs() | set(self.exclude)

    def question(self) -> Question:
        op = self.rng.choices(list(self.mix), weights=list(self.mix.values()))[0]
        while True:
            q = sample_question(op, self.rng)
            if (q.op, q.a, q.b) not in self.excluded:
                return q

    def batch(self, size: int) -> list[tuple[str, str]]:
        """``size`` pairs: plain, or (with chance ``peer_share``) all showing the same 1-5 lines."""
        k = self.rng.randint(1, MAX_SHOWN) if self.rng.random() < self.peer_share else 0
        out = []
        for _ in range(size):
            q = self.question()
            prompt = peer_prompt(q, shown_solutions(q, self.rng, k)) if k else q.prompt
            out.append((prompt, q.solution))
        return out
