"""``prune=True``: prove that candidates cannot win before computing their LCS, then skip them.

Every candidate's score is ``score(i) = sum_j w_j F(c_i, c_j)`` with ROUGE-L ``F = 2 LCS / (m + n)``.
A pair's LCS is at most the overlap of the two texts' histograms, ``sum_c min(count_a(c), count_b(c))``
(each common-subsequence element is matched once), so ``F <= 2 overlap / (m + n)`` bounds every pair
that has not been computed, and 0 bounds it from below. Once a text's pairs are all computed it is a
pivot: the Indel distance ``d = m + n - 2 LCS`` is a metric, so ``|d(u,a) - d(v,a)| <= d(u,v) <=
d(u,a) + d(v,a)`` tightens both bounds of every other pair. Per question, in rounds shared by all questions
(one rapidfuzz call per round), the open text with the highest upper bound gets all its pairs computed;
then every text whose best possible score is below the best *guaranteed* score of another candidate
(by more than the tie tolerance) is pruned. It stops when every text is exact or pruned.

Candidates that can still win (and every candidate tied with the winner) get exactly the scores
all-pairs voting gives, bit for bit; pruned candidates get their upper bound, flagged. Works on
characters (strings) and on word-id lists alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lmfuse.vote.rouge import pair_lcs, rouge_f

SLACK = 1 + 1e-12
"""Upper bounds are inflated by this factor so rounding can never put one below the exact F."""


@dataclass
class Pruned:
    """One question's distinct texts after pruning."""

    matrix: np.ndarray
    """``(k, k)`` exact F where computed, NaN elsewhere."""
    upper: np.ndarray
    """``(k, k)`` upper bounds (equal to ``matrix`` where computed)."""
    pruned: np.ndarray
    """``(k,)`` bool: the text was proven unable to win."""
    computed: int
    """Distinct pairs whose LCS was computed."""
    total: int
    """Distinct pairs in all."""


def _codes(item) -> np.ndarray:
    if isinstance(item, str):
        return np.frombuffer(item.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
    return np.asarray(item, dtype=np.int64)


def _histogram_bounds(items: Sequence) -> tuple[np.ndarray, np.ndarray]:
    """Lengths ``(k,)`` and the F upper bound ``(k, k)`` from histogram overlaps."""
    codes = [_codes(x) for x in items]
    lengths = np.array([c.size for c in codes], dtype=np.int64)
    flat = np.concatenate(codes) if codes else np.zeros(0, dtype=np.int64)
    alphabet, inverse = np.unique(flat, return_inverse=True)
    owner = np.repeat(np.arange(len(items)), lengths)
    counts = np.zeros((len(items), max(1, alphabet.size)), dtype=np.int64)
    np.add.at(counts, (owner, inverse.ravel()), 1)
    overlap = np.minimum(counts[:, None, :], counts[None, :, :]).sum(-1)
    total = lengths[:, None] + lengths[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        upper = np.where(total > 0, 2.0 * overlap / total * SLACK, 0.0)
    return lengths, np.minimum(upper, 1.0)


class _Question:
    """Bounds bookkeeping for one question's distinct texts."""

    def __init__(self, items: Sequence, mult: np.ndarray, min_w: np.ndarray, tie_tol: float) -> None:
        self.items, self.mult, self.min_w, self.tie_tol = items, mult, min_w, tie_tol
        k = len(items)
        self.lengths, self.upper = _histogram_bounds(items)
        self.exact = np.full((k, k), np.nan)
        self.known = np.eye(k, dtype=bool)
        self.exact[np.diag_indices(k)] = (self.lengths > 0).astype(np.float64)
        self.upper[np.diag_indices(k)] = self.exact[np.diag_indices(k)]
        self.lower = np.where(self.known, self.exact, 0.0)
        self.dist = np.full((k, k), -1, dtype=np.int64)  # Indel distance m + n - 2 LCS where known
        self.dist[np.diag_indices(k)] = 0
        self.pruned = np.zeros(k, dtype=bool)
        self.computed = 0

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Best-case and worst-case candidate score of each text (its lightest-weighted copy)."""
        diag = self.exact.diagonal()
        lower = self.lower @ self.mult - self.min_w * diag
        upper = self.upper @ self.mult - self.min_w * diag
        return upper, lower

    def prune(self) -> None:
        upper, lower = self.bounds()
        best = lower.max()
        margin = 2 * self.tie_tol * max(1.0, float(np.abs(upper).max()))
        self.pruned |= upper < best - margin

    def next_pairs(self) -> list[tuple[int, int]]:
        """All unknown pairs of the open text with the highest upper bound (none when done)."""
        open_ = ~self.pruned & ~self.known.all(axis=1)
        if not open_.any():
            return []
        upper, _ = self.bounds()
        u = int(np.argmax(np.where(open_, upper, -np.inf)))
        return [(u, v) for v in np.flatnonzero(~self.known[u])]

    def fill(self, pairs: list[tuple[int, int]], f: np.ndarray, lcs: np.ndarray) -> None:
        """Record computed pairs; the completed rows become pivots of triangle bounds."""
        for (u, v), value, common in zip(pairs, f, lcs, strict=True):
            self.exact[u, v] = self.exact[v, u] = value
            self.known[u, v] = self.known[v, u] = True
            self.dist[u, v] = self.dist[v, u] = self.lengths[u] + self.lengths[v] - 2 * int(common)
        self.computed += len(pairs)
        for a in {u for u, _ in pairs}:
            if self.known[a].all():
                self._triangle(a)
        self.upper = np.where(self.known, self.exact, self.upper)
        self.lower = np.where(self.known, self.exact, self.lower)

    def _triangle(self, a: int) -> None:
        """Indel distance is a metric: |d(u,a) - d(v,a)| <= d(u,v) <= d(u,a) + d(v,a) bounds every LCS."""
        d = self.dist[a].astype(np.float64)
        total = (self.lengths[:, None] + self.lengths[None, :]).astype(np.float64)
        lcs_hi = (total - np.abs(d[:, None] - d[None, :])) / 2
        lcs_lo = np.maximum(0.0, (total - d[:, None] - d[None, :]) / 2)
        with np.errstate(divide="ignore", invalid="ignore"):
            hi = np.where(total > 0, 2 * lcs_hi / total * SLACK, 0.0)
            lo = np.where(total > 0, 2 * lcs_lo / total / SLACK, 0.0)
        self.upper = np.minimum(self.upper, hi)
        self.lower = np.maximum(self.lower, lo)


def prune_groups(
    groups: Sequence[Sequence], multiplicity: Sequence[np.ndarray], min_weight: Sequence[np.ndarray],
    tie_tol: float, workers: int = -1,
) -> list[Pruned]:  # fmt: skip
    """Prune each question's distinct texts ``groups[q]`` (weights summed per text in ``multiplicity``,
    the smallest single candidate weight per text in ``min_weight``)."""
    qs = [_Question(g, m, w, tie_tol) for g, m, w in zip(groups, multiplicity, min_weight, strict=True)]
    for q in qs:
        q.prune()
    while True:
        todo = [(q, q.next_pairs()) for q in qs]
        todo = [(q, p) for q, p in todo if p]
        if not todo:
            break
        a = [q.items[u] for q, pairs in todo for u, _ in pairs]
        b = [q.items[v] for q, pairs in todo for _, v in pairs]
        len_a = np.fromiter(map(len, a), dtype=np.int64, count=len(a))
        len_b = np.fromiter(map(len, b), dtype=np.int64, count=len(b))
        lcs = pair_lcs(a, b, workers)
        f = rouge_f(lcs, len_a, len_b)
        start = 0
        for q, pairs in todo:
            q.fill(pairs, f[start : start + len(pairs)], lcs[start : start + len(pairs)])
            start += len(pairs)
            q.prune()
    k_pairs = [math.comb(len(q.items), 2) for q in qs]
    return [Pruned(q.exact, q.upper, q.pruned, q.computed, t) for q, t in zip(qs, k_pairs, strict=True)]
