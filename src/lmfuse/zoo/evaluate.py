"""Score any generator on the zoo's held-out questions, overall and per operation."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from lmfuse.vote.extract import extract_number as _eot_number
from lmfuse.zoo.questions import OPS, Question, eval_set

MAX_NEW_TOKENS = 24
"""Tokens a zoo model needs for its longest answer (a 23-character scratchpad, ``" 9*9=81,9*9+8=89 so 891"``,
one token per character with the character tokenizer) and EOS: every zoo caller's budget."""


def extract_number(completion: str) -> str | None:
    """The EoT rule (``lmfuse.vote.extract.extract_number``): the first number after the last "the answer
    is", else the last number. Reads a scratchpad (``" 7+8=15,3+4+1=8 so 85"``) and a bare
    answer (``" 85"``) alike, as the vote and exchange scorers do."""
    return _eot_number(completion)


@dataclass
class EvalResult:
    """Accuracy on the held-out set."""

    accuracy: float
    per_op: dict[str, float]
    n: int
    seconds: float
    predictions: list[str | None] = field(default_factory=list, repr=False)
    completions: list[str] = field(default_factory=list, repr=False)

    def row(self) -> dict[str, float]:
        return {"all": self.accuracy, **self.per_op}


def score(questions: Sequence[Question], completions: Sequence[str], seconds: float = 0.0) -> EvalResult:
    """Compare completions with the questions' answers."""
    if len(completions) != len(questions):
        raise ValueError(f"expected {len(questions)} completions, found {len(completions)}")
    preds = [extract_number(c) for c in completions]
    ok = [p == q.answer for p, q in zip(preds, questions, strict=True)]
    per_op = {}
    for op in OPS:
        idx = [i for i, q in enumerate(questions) if q.op == op]
        if idx:
            per_op[op] = sum(ok[i] for i in idx) / len(idx)
    return EvalResult(sum(ok) / max(len(ok), 1), per_op, len(ok), seconds, preds, list(completions))


def evaluate(
    generate_fn: Callable[[list[str]], list[str]],
    questions: Sequence[Question] | None = None,
    batch_size: int = 64,
) -> EvalResult:
    """Run ``generate_fn(prompts) -> completions`` over the held-out set in batches and score it."""
    questions = list(questions) if questions is not None else eval_set()
    start = time.perf_counter()
    completions: list[str] = []
    for i in range(0, len(questions), batch_size):
        completions.extend(generate_fn([q.prompt for q in questions[i : i + batch_size]]))
    return score(questions, completions, time.perf_counter() - start)


def hf_generate_fn(
    model, tokenizer, max_new_tokens: int = MAX_NEW_TOKENS
) -> Callable[[list[str]], list[str]]:
    """Greedy batched generation with a transformers model: prompts → completions (prompt removed)."""
    import torch

    def generate(prompts: list[str]) -> list[str]:
        enc = tokenizer(prompts, return_tensors="pt", padding=True).to(model.device)
        with torch.no_grad():
            out = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        return tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)

    return generate
