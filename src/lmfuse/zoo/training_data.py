"""Training examples of the zoo: scratchpad solutions, some after other solutions to read (peer reading).

A plain example is a question's prompt and its scratchpad (``Question.text``). A peer-reading example
puts 1-5 solved lines of the same question before it, in the ``qa_lines`` format that EoT and MoA use
for zoo agents (``lmfuse.exchange.prompts.qa_lines``): ``"Q: 37+48= A: 85\\nQ: 37+48= A: 75\\nQ: 37+48= A:"``.
The shown answers are right or wrong; wrong ones are the slips a zoo model makes (a dropped or extra
carry or borrow, one digit off, the answer of another operation), sometimes repeated as correlated
members repeat them. The target is always the correct scratchpad, so a model learns to weigh what it
reads against its own working. Held-out questions (``held_out_pairs``) are never drawn.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass

from lmfuse.zoo.questions import OPS, Question, held_out_pairs, sample_question

MAX_SHOWN = 5
"""At most this many solved lines before the question (an EoT agent of five sees its own and 4 peers')."""


def wrong_answer(q: Question, rng: random.Random) -> int:
    """A plausible wrong answer to ``q``: a carry/borrow slip, a digit off by one, or another op's answer."""
    right = int(q.answer)
    while True:
        kind = rng.randrange(4)
        if kind == 0:  # carry or borrow dropped or added on the tens
            guess = right + rng.choice((-10, 10))
        elif kind == 1:  # one digit off by one
            digits = list(str(right))
            i = rng.randrange(len(digits))
            digits[i] = str((int(digits[i]) + rng.choice((-1, 1))) % 10)
            guess = int("".join(digits))
        elif kind == 2:  # the answer of another operation on the same operands
            guess = rng.choice((q.a + q.b, abs(q.a - q.b), q.a * q.b))
        else:  # a units-digit slip
            guess = right + rng.choice((-2, -1, 1, 2))
        if guess >= 0 and guess != right:
            return guess


def shown_answers(q: Question, rng: random.Random, k: int) -> list[str]:
    """``k`` answers to show before ``q``: each right with a per-example chance drawn in [0.2, 0.9]."""
    p_right = rng.uniform(0.2, 0.9)
    shown: list[str] = []
    wrong: list[str] = []
    for _ in range(k):
        if rng.random() < p_right:
            shown.append(q.answer)
        elif wrong and rng.random() < 0.4:  # correlated members repeat the same slip
            shown.append(rng.choice(wrong))
        else:
            wrong.append(str(wrong_answer(q, rng)))
            shown.append(wrong[-1])
    return shown


def peer_prompt(q: Question, answers: list[str]) -> str:
    """``q``'s prompt after solved lines with ``answers``, exactly as an EoT/MoA ``qa_lines`` agent sees it."""
    from lmfuse.exchange.prompts import Shown, qa_lines

    return qa_lines(q.prompt, [Shown(f"peer{i}", a, a) for i, a in enumerate(answers)])


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

    def __post_init__(self) -> None:
        unknown = sorted(set(self.mix) - set(OPS))
        if unknown:
            raise ValueError(f"mix: expected operations among {', '.join(OPS)}, found {unknown}")
        self.rng = random.Random(self.seed)
        self.excluded = held_out_pairs()

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
            prompt = peer_prompt(q, shown_answers(q, self.rng, k)) if k else q.prompt
            out.append((prompt, q.solution))
        return out
