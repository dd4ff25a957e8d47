"""Crowd voting: the candidate most similar to all the others wins.

``score(i) = sum over j != i of w_j * sim(c_i, c_j)`` (``w_j`` = candidate weights, 1 by default); the
winner has the highest score. Rules, all deliberate:

- **Ties** go to the lowest index. Scores within ``tie_tol * max(1, |best|)`` of the best count as tied
  (floating-point sums of equal similarities can differ in the last bit); ``tied`` lists them, and
  ``tie`` is True when they are not all the same text (with ``answer``: not all the same answer).
- Scores are exact sums (``math.fsum``), so permuting the candidates permutes the scores bit for bit.
- **Duplicates** are scored once and count once per occurrence (identical texts share a score; the first wins).
- ``margin`` compares the winner with the best *different* candidate (copies do not make it 0).
- A **single candidate** wins with score 0, ``margin`` None; an **empty list** is an error. Empty strings
  are ordinary candidates (ROUGE-L gives them 0 against everything, as rouge-score does).
- With the ``answer`` similarity, candidates without an extractable answer are listed in ``unparsed``
  and never win; if no candidate has one, ``index`` and ``text`` are None.
- Several similarities are normalised per question (``combine.py``: z-score by default, or rank) and
  summed with ``weights``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from lmfuse.errors import ConfigError, InputDataError
from lmfuse.vote.combine import NORMALIZE, combine
from lmfuse.vote.prune import prune_groups
from lmfuse.vote.rouge import token_ids
from lmfuse.vote.similarity import AnswerMatch, CharRougeL, Similarity, WordRougeL, get_similarity

SimilaritySpec = str | Similarity | Callable[[str, str], float]


@dataclass
class VoteResult:
    """The outcome of voting over one question's candidates."""

    index: int | None
    """Winner's position in the input (None only when no candidate is eligible)."""
    text: str | None
    scores: list[float]
    """One per candidate: sum of its (weighted) similarities to every other candidate."""
    matrix: np.ndarray = field(repr=False)
    """``(n, n)`` pairwise similarities used (normalised and combined when several)."""
    margin: float | None
    """Best score minus the best score of a candidate with another text (with ``answer``: another
    answer); None when there is no such candidate. 0 (or within ``tie_tol``) on a tie."""
    tie: bool
    tied: list[int]
    """Every index whose score ties with the best (the winner first)."""
    answers: list[str | None] | None = None
    """Extracted answers, with the ``answer`` similarity."""
    unparsed: list[int] = field(default_factory=list)
    """Candidates with no extractable answer (never winners)."""
    components: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    """Raw ``(n, n)`` matrix of each similarity, by name."""
    bounds: list[int] = field(default_factory=list)
    """``prune=True``: candidates proven unable to win, whose ``scores`` are upper bounds (their
    uncomputed pairs are NaN in ``matrix``); every other score is exact."""
    pairs_computed: int | None = None
    """``prune=True``: distinct pairs whose LCS was computed, of ``pairs_total``."""
    pairs_total: int | None = None

    def to_dict(self) -> dict:
        """JSON-ready summary (no matrices)."""
        out = {"index": self.index, "winner": self.text, "scores": self.scores, "margin": self.margin}
        out.update(tie=self.tie, tied=self.tied)
        if self.answers is not None:
            out.update(answers=self.answers, unparsed=self.unparsed)
        if self.pairs_total is not None:
            out.update(bounds=self.bounds, pairs_computed=self.pairs_computed, pairs_total=self.pairs_total)
        return out


def _check_candidates(groups: Sequence[Sequence[str]]) -> None:
    if isinstance(groups, str) or not isinstance(groups, Sequence):
        raise InputDataError(f"expected a list of candidate lists, found {type(groups).__name__}")
    for q, group in enumerate(groups):
        where = f"question {q}: " if len(groups) > 1 else ""
        if isinstance(group, str) or not isinstance(group, Sequence):
            raise InputDataError(f"{where}expected a list of candidate strings, found {type(group).__name__}")
        if not group:
            raise InputDataError(f"{where}no candidates; expected at least one candidate string")
        for i, c in enumerate(group):
            if not isinstance(c, str):
                raise InputDataError(
                    f"{where}candidate {i}: expected a string, found {type(c).__name__} ({c!r:.40})"
                )


def _check_weights(weights: Sequence[float] | None, n: int, what: str) -> list[float]:
    if weights is None:
        return [1.0] * n
    w = list(weights)
    if len(w) != n:
        raise ConfigError(f"{what}: expected {n} weights (one per {what.split()[0]}), found {len(w)}")
    bad = [x for x in w if not isinstance(x, (int, float, np.number)) or not math.isfinite(x) or x < 0]
    if bad or not any(w):
        raise ConfigError(f"{what}: expected finite non-negative numbers, not all 0; found {w}")
    return [float(x) for x in w]


@functools.lru_cache(maxsize=32)
def _named(name: str) -> Similarity:
    """A registered similarity with default options, built once (``vote`` in a loop pays it once)."""
    return get_similarity(name)


def _similarities(similarity, weights, normalize) -> tuple[list[Similarity], list[float], str]:
    single = isinstance(similarity, (str, Similarity)) or callable(similarity)
    specs = [similarity] if single or not isinstance(similarity, Sequence) else list(similarity)
    sims = [_named(s) if isinstance(s, str) else get_similarity(s) for s in specs]
    if not sims:
        raise ConfigError("similarity: expected at least one similarity, found an empty list")
    sim_weights = _check_weights(weights, len(sims), "similarity weights")
    method = normalize or ("zscore" if len(sims) > 1 else "none")
    if method not in NORMALIZE:
        raise ConfigError(f"normalize: expected one of {', '.join(NORMALIZE)}, found {method!r}")
    return sims, sim_weights, method


def _distinct(group: list[str]) -> tuple[list[str], np.ndarray]:
    """Distinct texts in first-seen order and, per candidate, its position among them."""
    position: dict[str, int] = {}
    inverse = np.array([position.setdefault(t, len(position)) for t in group], dtype=np.int64)
    return list(position), inverse


def _expand(
    sim: Similarity, uniques: list[list[str]], inverses: list[np.ndarray], given: list | None = None
) -> list[np.ndarray]:
    """Matrices over distinct texts (``given``, else ``sim``'s) → over all candidates; checked for shape
    and finiteness."""
    out = []
    for m, texts, inv in zip(
        given if given is not None else sim.matrices(uniques), uniques, inverses, strict=True
    ):
        m = np.asarray(m, dtype=np.float64)
        if m.shape != (len(texts), len(texts)):
            raise ConfigError(f"similarity {sim.name!r} returned shape {m.shape} for {len(texts)} texts")
        if not np.isfinite(m).all():
            i, j = np.argwhere(~np.isfinite(m))[0]
            raise ConfigError(
                f"similarity {sim.name!r} returned {m[i, j]} for {texts[i]!r:.40} vs {texts[j]!r:.40}; "
                "a similarity must be a finite number"
            )
        out.append(m if len(inv) == len(texts) else m[np.ix_(inv, inv)])  # no duplicates: nothing to expand
    return out


def _decide(scores: list[float], eligible: list[bool], keys: Sequence, tie_tol: float) -> tuple:
    """(index, margin, tie, tied) under the lowest-index tie rule; ``keys`` say which candidates are alike."""
    pool = [i for i, ok in enumerate(eligible) if ok]
    if not pool:
        return None, None, False, []
    best = max(scores[i] for i in pool)
    tol = tie_tol * max(1.0, abs(best))
    tied = [i for i in pool if scores[i] >= best - tol]
    index = tied[0]
    others = [scores[i] for i in pool if keys[i] != keys[index]]
    margin = best - max(others) if others else None
    return index, margin, any(keys[i] != keys[index] for i in tied), tied


def _result(group, matrix, components, cand_w, answers, tie_tol) -> VoteResult:
    n = len(group)
    weighted = (matrix * np.asarray(cand_w)[None, :]).tolist()
    scores = [math.fsum(row[:i] + row[i + 1 :]) for i, row in enumerate(weighted)]
    eligible = [a is not None for a in answers] if answers is not None else [True] * n
    keys = answers if answers is not None else group
    index, margin, tie, tied = _decide(scores, eligible, keys, tie_tol)
    unparsed = [i for i, ok in enumerate(eligible) if not ok]
    text = None if index is None else group[index]
    return VoteResult(index, text, scores, matrix, margin, tie, tied, answers, unparsed, components)


class _NoBar:
    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def update(self, n: int) -> None:
        return None


def _bar(total: int, progress: bool):
    """A tqdm bar, or (no progress: ``vote`` in a loop) a no-op without tqdm's set-up cost."""
    if not progress:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="q", desc="voting", delay=0.5)


def vote_batch(
    candidate_sets: Sequence[Sequence[str]],
    similarity: SimilaritySpec | Sequence[SimilaritySpec] = "char_rouge_l",
    weights: Sequence[float] | None = None,
    *,
    normalize: str | None = None,
    candidate_weights: Sequence[Sequence[float] | None] | None = None,
    tie_tol: float = 1e-9,
    chunk_size: int = 1024,
    progress: bool = False,
    prune: bool = False,
) -> list[VoteResult]:
    """Vote over many questions; each distinct text is tokenised/encoded once per chunk of questions.

    ``prune`` (a single ``char_rouge_l`` or ``word_rouge_l`` similarity): skip the LCS of candidates
    proven unable to win (``prune.py``); same winners, ties and exact scores for every candidate that
    can win; the others' scores are upper bounds listed in ``bounds``, and ``margin`` is then a lower
    bound of the true margin. Default: exact all-pairs.

    ``similarity``: a name, a ``Similarity``, ``f(a, b) -> float``, or a list of them combined with
    ``weights`` after per-question ``normalize`` (``zscore`` default when several, ``rank``, ``none``).
    ``candidate_weights``: per question, one non-negative weight per candidate (e.g. model trust).
    """
    _check_candidates(candidate_sets)
    sims, sim_weights, method = _similarities(similarity, weights, normalize)
    answer_sims = [s for s in sims if isinstance(s, AnswerMatch)]
    if candidate_weights is not None and len(candidate_weights) != len(candidate_sets):
        raise ConfigError(
            f"candidate_weights: expected {len(candidate_sets)} entries, found {len(candidate_weights)}"
        )
    if prune:
        _check_prunable(sims, method)
    results: list[VoteResult] = []
    # delay: short runs finish before any bar is drawn.
    with _bar(len(candidate_sets), progress) as bar:
        for start in range(0, len(candidate_sets), chunk_size):
            chunk = [list(g) for g in candidate_sets[start : start + chunk_size]]
            uniques, inverses = zip(*(_distinct(g) for g in chunk), strict=True)
            if prune:
                results += _pruned_chunk(
                    sims[0], chunk, uniques, inverses, start, candidate_weights, tie_tol, len(candidate_sets)
                )
                bar.update(len(chunk))
                continue
            # the answers of each distinct text, extracted once: for the matrix and for the result
            first = answer_sims[0] if answer_sims else None
            found = [first.answers(u) for u in uniques] if first is not None else []
            per_sim = [
                _expand(s, uniques, inverses, [s.matrix_of(a) for a in found] if s is first else None)
                for s in sims
            ]
            for q, group in enumerate(chunk):
                mats = [m[q] for m in per_sim]
                single = len(sims) == 1 and method == "none"
                matrix = mats[0] if single else combine(mats, sim_weights, method)
                components = {s.name: m for s, m in zip(sims, mats, strict=True)} if len(sims) > 1 else {}
                answers = [found[q][i] for i in inverses[q]] if first is not None else None
                cw = candidate_weights[start + q] if candidate_weights is not None else None
                where = "candidate weights" + (f" of question {start + q}" if len(candidate_sets) > 1 else "")
                cand_w = _check_weights(cw, len(group), where)
                results.append(_result(group, matrix, components, cand_w, answers, tie_tol))
            bar.update(len(chunk))
    return results


def _check_prunable(sims: list[Similarity], method: str) -> None:
    if len(sims) != 1 or not isinstance(sims[0], (CharRougeL, WordRougeL)) or method != "none":
        names = "+".join(s.name for s in sims)
        raise ConfigError(f"prune: needs one char_rouge_l or word_rouge_l similarity, found {names}")


def _pruned_chunk(
    sim, chunk, uniques, inverses, start, candidate_weights, tie_tol, n_sets
) -> list[VoteResult]:
    """Vote over one chunk with ``prune``: bounds first, LCS only where a candidate can still win."""
    weights, mult, min_w = [], [], []
    for q, (group, inv) in enumerate(zip(chunk, inverses, strict=True)):
        cw = candidate_weights[start + q] if candidate_weights is not None else None
        where = "candidate weights" + (f" of question {start + q}" if n_sets > 1 else "")
        w = np.asarray(_check_weights(cw, len(group), where))
        k = int(inv.max()) + 1
        weights.append(w)
        mult.append(np.bincount(inv, weights=w, minlength=k))
        lightest = np.full(k, np.inf)
        np.minimum.at(lightest, inv, w)
        min_w.append(lightest)
    texts = list(uniques) if isinstance(sim, CharRougeL) else token_ids(uniques, sim.tokenize)
    out = []
    for q, p in enumerate(prune_groups(texts, mult, min_w, tie_tol, sim.workers)):
        group, inv = chunk[q], inverses[q]
        bounded = np.where(np.isnan(p.matrix), p.upper, p.matrix)[np.ix_(inv, inv)]
        r = _result(group, bounded, {}, list(weights[q]), None, tie_tol)
        r.matrix = p.matrix[np.ix_(inv, inv)]
        r.bounds = [i for i in range(len(group)) if p.pruned[inv[i]]]
        r.pairs_computed, r.pairs_total = p.computed, p.total
        out.append(r)
    return out


def vote(
    candidates: Sequence[str],
    similarity: SimilaritySpec | Sequence[SimilaritySpec] = "char_rouge_l",
    weights: Sequence[float] | None = None,
    *,
    normalize: str | None = None,
    candidate_weights: Sequence[float] | None = None,
    tie_tol: float = 1e-9,
    prune: bool = False,
) -> VoteResult:
    """Pick the candidate most similar to all others (see the module docstring for every rule)."""
    if isinstance(candidates, str) or not isinstance(candidates, Sequence):
        raise InputDataError(f"expected a list of candidate strings, found {type(candidates).__name__}")
    cw = None if candidate_weights is None else [candidate_weights]
    return vote_batch(
        [candidates], similarity, weights, normalize=normalize, candidate_weights=cw, tie_tol=tie_tol,
        prune=prune,
    )[0]  # fmt: skip
