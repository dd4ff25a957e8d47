"""Confidence, unanimity and the majority rule of EoT.

- confidence(history) = (count of the most frequent answer in an agent's own answer history, the
  initial answer included) / (length of that history), as in the paper; a failed extraction (None)
  counts as an answer like any other, as in the reference code (which stores "" for it): ``[None,
  None, "3"]`` has confidence 2/3.
- unanimous(answers): every answer extracted and all equal.
- majority(answers, confidences): the most frequent extracted answer (None dropped). Ties go to the
  answer with the highest summed confidence of its agents; if still tied, to the answer of the
  lowest-indexed agent among the tied ones (agent 0 first: the hub in ``report``/``debate``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence


def confidence(history: Sequence[str | None]) -> float:
    """Share of ``history`` equal to its most frequent answer (None counted as one); 0.0 if empty."""
    if not history:
        return 0.0
    return max(Counter(history).values()) / len(history)


def unanimous(answers: Sequence[str | None]) -> bool:
    return bool(answers) and None not in answers and len(set(answers)) == 1


def majority(answers: Sequence[str | None], confidences: Sequence[float] | None = None) -> str | None:
    """The majority answer under the documented tie rule; ``None`` when nothing was extracted."""
    confidences = confidences if confidences is not None else [0.0] * len(answers)
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None
    top = max(counts.values())
    tied = [a for a in counts if counts[a] == top]
    if len(tied) == 1:
        return tied[0]
    weight = {a: round(sum(c for x, c in zip(answers, confidences, strict=True) if x == a), 9) for a in tied}
    best = max(weight.values())
    tied = [a for a in tied if weight[a] == best]
    return next(a for a in answers if a in tied)
