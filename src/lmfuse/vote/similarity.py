"""Similarities between candidates, registered by name, and the protocol any similarity follows.

A similarity turns the candidates of one question into a ``(n, n)`` float64 matrix with
``matrix[i, j] = sim(hypothesis c_i, reference c_j)`` (asymmetric measures such as BLEU use that
orientation). ``matrices(groups)`` does many questions at once so a similarity can share work across
them (the embedding model encodes every candidate of every question in one batched pass).

Built-in names: ``char_rouge_l``, ``word_rouge_l``, ``exact``, ``answer`` (here), ``chrf``, ``bleu``
(``lmfuse.vote.metrics``, sacrebleu) and ``embedding`` (``lmfuse.vote.embedding``,
sentence-transformers); the last three are imported only when asked for. Add your own with
``@register_similarity("name")`` on a class or factory, or pass any ``f(a: str, b: str) -> float``.
"""

from __future__ import annotations

import importlib
import inspect
import re
import unicodedata
from collections.abc import Callable, Sequence

import numpy as np

from lmfuse.errors import ConfigError
from lmfuse.vote.extract import AnswerExtractor
from lmfuse.vote.rouge import rouge_matrices, token_ids, word_tokenizer


class Similarity:
    """Base class: subclasses set ``name`` and implement ``matrix`` (and may override ``matrices``)."""

    name: str = "similarity"

    def matrix(self, texts: Sequence[str]) -> np.ndarray:
        """``(n, n)`` float64 similarities of one question's (distinct) candidates."""
        raise NotImplementedError

    def matrices(self, groups: Sequence[Sequence[str]]) -> list[np.ndarray]:
        """One ``(n_q, n_q)`` matrix per question."""
        return [self.matrix(g) for g in groups]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class CharRougeL(Similarity):
    """Character-level ROUGE-L F1 (Unicode code points), bit-identical to rouge-score's F-measure."""

    name = "char_rouge_l"

    def __init__(self, workers: int = -1) -> None:
        self.workers = workers
        """rapidfuzz threads (-1: all cores)."""

    def matrix(self, texts: Sequence[str]) -> np.ndarray:
        return self.matrices([texts])[0]

    def matrices(self, groups: Sequence[Sequence[str]]) -> list[np.ndarray]:
        return rouge_matrices([list(g) for g in groups], self.workers)


class WordRougeL(Similarity):
    """Word-level ROUGE-L F1; ``tokenizer``: ``default`` (keeps CJK), ``rouge_score`` or ``whitespace``."""

    name = "word_rouge_l"

    def __init__(self, tokenizer: str = "default", workers: int = -1) -> None:
        self.tokenize = word_tokenizer(tokenizer)
        self.workers = workers

    def matrix(self, texts: Sequence[str]) -> np.ndarray:
        return self.matrices([texts])[0]

    def matrices(self, groups: Sequence[Sequence[str]]) -> list[np.ndarray]:
        return rouge_matrices(token_ids(groups, self.tokenize), self.workers)


def normalize_text(text: str) -> str:
    """NFKC, case-folded, whitespace collapsed and stripped: what ``exact`` compares."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def equality_matrix(keys: Sequence[object]) -> np.ndarray:
    """``(n, n)`` float64: 1.0 where ``keys[i] == keys[j]`` and neither is None, else 0.0."""
    ids: dict[object, int] = {}
    codes = np.array([-1 if k is None else ids.setdefault(k, len(ids)) for k in keys], dtype=np.int64)
    same = (codes[:, None] == codes[None, :]) & (codes[:, None] >= 0)
    return same.astype(np.float64)


class Exact(Similarity):
    """1 when two candidates are equal after ``normalize_text`` (Unicode NFKC, case, spaces), else 0."""

    name = "exact"

    def matrix(self, texts: Sequence[str]) -> np.ndarray:
        return equality_matrix([normalize_text(t) for t in texts])


class AnswerMatch(Similarity):
    """Self-consistency: 1 when both extracted final answers exist and are equal, else 0.

    Candidates with no extractable answer agree with nobody; ``vote`` reports them in
    ``VoteResult.unparsed`` and never picks one as the winner.
    """

    name = "answer"

    def __init__(self, kind: str = "auto", pattern: str | None = None, choices: str = "ABCDE") -> None:
        self.extract = AnswerExtractor(kind, pattern, choices)

    def answers(self, texts: Sequence[str]) -> list[str | None]:
        return [self.extract(t) for t in texts]

    def matrix(self, texts: Sequence[str]) -> np.ndarray:
        return self.matrix_of(self.answers(texts))

    def matrix_of(self, answers: Sequence[str | None]) -> np.ndarray:
        """The matrix of texts whose answers are already extracted (``matrix`` = ``matrix_of(answers(texts))``)."""
        return equality_matrix(answers)


class Pairwise(Similarity):
    """Wraps a user function ``f(hypothesis, reference) -> float``, called on every ordered pair."""

    def __init__(self, fn: Callable[[str, str], float], name: str | None = None) -> None:
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "custom")

    def matrix(self, texts: Sequence[str]) -> np.ndarray:
        n = len(texts)
        out = np.empty((n, n), dtype=np.float64)
        for i in range(n):
            for j in range(n):
                value = self.fn(texts[i], texts[j])
                if not isinstance(value, (int, float, np.number)):
                    raise ConfigError(
                        f"similarity {self.name!r} returned {type(value).__name__} ({value!r}) for "
                        f"candidates {i} and {j}; a similarity must return a number"
                    )
                out[i, j] = float(value)
        return out


_BUILTIN: dict[str, str] = {
    "char_rouge_l": "lmfuse.vote.similarity:CharRougeL",
    "word_rouge_l": "lmfuse.vote.similarity:WordRougeL",
    "exact": "lmfuse.vote.similarity:Exact",
    "answer": "lmfuse.vote.similarity:AnswerMatch",
    "chrf": "lmfuse.vote.metrics:Chrf",
    "bleu": "lmfuse.vote.metrics:Bleu",
    "embedding": "lmfuse.vote.embedding:EmbeddingCosine",
}
_USER: dict[str, Callable[..., Similarity]] = {}
_NAME = re.compile(r"[a-z][a-z0-9_]*")


def similarity_names() -> list[str]:
    """Every registered similarity name, built-ins first."""
    return [*_BUILTIN, *_USER]


def register_similarity(name: str) -> Callable:
    """Decorator registering a ``Similarity`` subclass or factory under ``name`` (lower-case, unique)."""
    if not _NAME.fullmatch(name):
        raise ConfigError(f"similarity name must be lower-case letters, digits and '_', found {name!r}")
    if name in _BUILTIN or name in _USER:
        raise ConfigError(f"similarity {name!r} is already registered; choose another name")

    def decorate(factory: Callable[..., Similarity]) -> Callable[..., Similarity]:
        if not callable(factory):
            raise ConfigError(f"register_similarity({name!r}) needs a class or function")
        _USER[name] = factory
        return factory

    return decorate


def _factory(name: str) -> Callable[..., Similarity]:
    if name in _USER:
        return _USER[name]
    if name not in _BUILTIN:
        raise ConfigError(
            f"unknown similarity {name!r}; expected one of {', '.join(similarity_names())} "
            "or a function f(a, b) -> float"
        )
    module, attr = _BUILTIN[name].split(":")
    return getattr(importlib.import_module(module), attr)


def get_similarity(spec: str | Similarity | Callable[[str, str], float], **options) -> Similarity:
    """A ``Similarity`` from a registered name (with its ``options``), an instance, or ``f(a, b)``."""
    if isinstance(spec, Similarity):
        if options:
            raise ConfigError(f"options {sorted(options)} given with an already built {spec!r}")
        return spec
    if isinstance(spec, type) and issubclass(spec, Similarity):
        return spec(**options)
    if isinstance(spec, str):
        factory = _factory(spec)
        try:
            inspect.signature(factory).bind(**options)
        except TypeError:
            accepted = [p for p in inspect.signature(factory).parameters if p != "self"]
            raise ConfigError(
                f"similarity {spec!r} accepts options {accepted or 'none'}, found {sorted(options)}"
            ) from None
        sim = factory(**options)
        if not isinstance(sim, Similarity):
            raise ConfigError(
                f"similarity {spec!r}: its factory returned {type(sim).__name__}, expected a Similarity "
                "(subclass lmfuse.vote.Similarity and implement matrix(texts))"
            )
        sim.name = spec
        return sim
    if callable(spec):
        return Pairwise(spec)
    raise ConfigError(
        f"similarity: expected a name ({', '.join(similarity_names())}), a Similarity or a function "
        f"f(a, b) -> float, found {type(spec).__name__}"
    )
