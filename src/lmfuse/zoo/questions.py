"""The zoo's task: synthetic arithmetic questions ``Q: 37+48= A:``, answered with a short scratchpad.

Operands: addition and subtraction over 0-99 (subtraction keeps the result non-negative), multiplication
of 0-99 by 0-9. The held-out evaluation set is fixed by a seed and never used for training.

Answers (``Question.solution``) work digit by digit, units first, with the carry or borrow written out,
and end with ``so`` and the result, so that the EoT rule (``lmfuse.vote.extract.extract_number``: the
last number when no "the answer is") reads them:

- ``Q: 37+48= A: 7+8=15,3+4+1=8 so 85`` (units, then tens plus carry)
- ``Q: 84-37= A: 14-7=7,8-1-3=4 so 47`` (a borrowed 10 on the units, paid on the tens)
- ``Q: 37*8= A: 7*8=56,3*8+5=29 so 296`` (units times b, then tens times b plus carry)

One-digit operands have a tens digit 0 (``5+48`` → ``5+8=13,0+4+1=5``). The ending is ``so`` rather than
"the answer is" because every zoo caller decodes the answer one character per token: the phrase would
add 12 of the 23 characters of the longest answer (``zoo.MAX_NEW_TOKENS``) to every call and to training.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

OPS = ("add", "sub", "mul")
SYMBOL = {"add": "+", "sub": "-", "mul": "*"}
EVAL_SEED = 20261128
EVAL_PER_OP = 100
VALIDATION_PER_OP = 60
VALIDATION_SEED = 7


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
    def solution(self) -> str:
        """The scratchpad completion a zoo model is trained to write after the prompt (module docstring)."""
        return solution(self.op, self.a, self.b)

    @property
    def text(self) -> str:
        """Training form: prompt, then the scratchpad solution."""
        return f"{self.prompt}{self.solution}"


ENDING = "so"
"""The word before the result at the end of every solution."""


def solution(op: str, a: int, b: int) -> str:
    """``" 7+8=15,3+4+1=8 so 85"`` for ``("add", 37, 48)``; see the module docstring."""
    return scratchpad(op, a, b)[0]


def scratchpad(op: str, a: int, b: int, units_slip: int = 0, carry_slip: int = 0, tens_slip: int = 0):
    """``(text, value)`` of the solution of ``a op b``, with optional slips: the units step's result off by
    ``units_slip``, the carry or borrow off by ``carry_slip``, the tens step's off by ``tens_slip``. Each
    later step follows from the slipped one, as a model's slip propagates; ``value`` is the text's result,
    or None when a slip makes a step negative."""
    a1, a0 = divmod(a, 10)
    b1, b0 = divmod(b, 10)
    if op == "add":
        units = a0 + b0 + units_slip
        carry = units // 10 + carry_slip
        tens = a1 + b1 + carry + tens_slip
        steps = f"{a0}+{b0}={units},{a1}+{b1}+{carry}={tens}"
    elif op == "sub":
        borrow = int(a0 < b0)
        top = a0 + 10 * borrow
        units = top - b0 + units_slip
        borrow += carry_slip
        tens = a1 - borrow - b1 + tens_slip
        steps = f"{top}-{b0}={units},{a1}-{borrow}-{b1}={tens}"
    elif op == "mul":
        units = a0 * b + units_slip
        carry = units // 10 + carry_slip
        tens = a1 * b + carry + tens_slip
        steps = f"{a0}*{b}={units},{a1}*{b}+{carry}={tens}"
    else:
        raise ValueError(f"op must be one of {', '.join(OPS)}, found {op!r}")
    if min(units, carry if op != "sub" else borrow, tens) < 0:
        return steps, None
    value = tens * 10 + units % 10
    return f" {steps} {ENDING} {value}", value


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


def validation_set(per_op: int = VALIDATION_PER_OP, seed: int = VALIDATION_SEED) -> list[Question]:
    """``per_op`` distinct questions per operation, never a held-out one (``eval_set``), in a fixed order.

    ``scripts/train_zoo.py`` stops each member on it and excludes it from training (multiplication has
    only 1,000 questions: a trained-on set would measure memory, not skill); settings of a method on the
    zoo (the demo's MoA) are chosen on it, never on the held-out set. Ids are ``val-add-000`` and so on.
    """
    if isinstance(per_op, bool) or not isinstance(per_op, int) or per_op < 1:
        from lmfuse.errors import ConfigError

        raise ConfigError(f"per_op: expected a positive number of questions per operation, found {per_op!r}")
    rng, held, out = random.Random(f"zoo-validation-{seed}"), held_out_pairs(), []
    for op in OPS:
        seen: set[tuple[int, int]] = set()
        while len(seen) < per_op:
            q = sample_question(op, rng)
            if (q.op, q.a, q.b) not in held and (q.a, q.b) not in seen:
                seen.add((q.a, q.b))
                out.append(Question(f"val-{op}-{len(seen) - 1:03d}", op, q.a, q.b))
    return out
