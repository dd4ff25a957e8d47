"""The zoo's task: synthetic arithmetic questions ``Q: 37+48= A: 85``.

Operands: addition and subtraction over 0-99 (subtraction keeps the result non-negative), multiplication
of 0-99 by 0-9. The held-out evaluation set is fixed by a seed and never used for training.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

OPS = ("add", "sub", "mul")
SYMBOL = {"add": "+", "sub": "-", "mul": "*"}
EVAL_SEED = 20261128
EVAL_PER_OP = 100


@dataclass(frozen=True)
class Question:
    """One arithmetic question."""

    id: str
    op: str
    a: int
    b: int

    @property
    def prompt(self) -> str:
        """What a model is given: ``Q: 37+48= A:``."""
        return f"Q: {self.a}{SYMBOL[self.op]}{self.b}= A:"

    @property
    def answer(self) -> str:
        """The expected answer, as text."""
        return str({"add": self.a + self.b, "sub": self.a - self.b, "mul": self.a * self.b}[self.op])

    @property
    def text(self) -> str:
        """Training form: prompt, space, answer."""
        return f"{self.prompt} {self.answer}"


def sample_question(op: str, rng: random.Random, qid: str = "") -> Question:
    """Draw one question of ``op`` from the fixed operand ranges."""
    if op == "add":
        a, b = rng.randint(0, 99), rng.randint(0, 99)
    elif op == "sub":
        a, b = sorted((rng.randint(0, 99), rng.randint(0, 99)), reverse=True)
    elif op == "mul":
        a, b = rng.randint(0, 99), rng.randint(0, 9)
    else:
        raise ValueError(f"op must be one of {', '.join(OPS)}, found {op!r}")
    return Question(qid, op, a, b)


def eval_set(per_op: int = EVAL_PER_OP, ops: tuple[str, ...] = OPS) -> list[Question]:
    """The fixed held-out set: ``per_op`` distinct questions per operation (1 to ``EVAL_PER_OP``)."""
    if isinstance(per_op, bool) or not isinstance(per_op, int) or not 1 <= per_op <= EVAL_PER_OP:
        from lmfuse.errors import ConfigError

        raise ConfigError(f"per_op: expected 1 to {EVAL_PER_OP} questions per operation, found {per_op!r}")
    out = []
    for op in ops:
        rng = random.Random(f"{EVAL_SEED}-{op}")
        seen: set[tuple[int, int]] = set()
        while len(seen) < EVAL_PER_OP:
            q = sample_question(op, rng)
            if (q.a, q.b) not in seen:
                seen.add((q.a, q.b))
                if len(seen) <= per_op:
                    out.append(Question(f"{op}-{len(seen) - 1:03d}", op, q.a, q.b))
    return out


def held_out_pairs() -> set[tuple[str, int, int]]:
    """(op, a, b) of every evaluation question, for excluding them from training data."""
    return {(q.op, q.a, q.b) for q in eval_set()}
