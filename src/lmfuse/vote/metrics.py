"""Sentence-level chrF and BLEU from sacrebleu (the ``metrics`` extra), scaled to [0, 1].

Both are asymmetric: ``matrix[i, j]`` scores candidate i as the hypothesis against candidate j as the
single reference, as in minimum-Bayes-risk decoding. sacrebleu is imported on first use.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lmfuse.errors import BackendError
from lmfuse.vote.similarity import Similarity


def _sacrebleu_metrics():
    try:
        from sacrebleu.metrics import BLEU, CHRF
    except ImportError as exc:
        raise BackendError(
            f"the chrf and bleu similarities need sacrebleu ({exc}); install it with "
            "pip install 'lmfuse[metrics]'"
        ) from None
    return BLEU, CHRF


class _SacreMetric(Similarity):
    def _metric(self):
        raise NotImplementedError

    def matrix(self, texts: Sequence[str]) -> np.ndarray:
        metric = self._metric()
        n = len(texts)
        out = np.empty((n, n), dtype=np.float64)
        for i in range(n):
            for j in range(n):
                out[i, j] = metric.sentence_score(texts[i], [texts[j]]).score / 100.0
        return out


class Chrf(_SacreMetric):
    """chrF (character n-grams up to ``char_order``, ``beta`` = 2; chrF++ with ``word_order=2``)."""

    name = "chrf"

    def __init__(self, char_order: int = 6, word_order: int = 0, lowercase: bool = False) -> None:
        self.options = {"char_order": char_order, "word_order": word_order, "lowercase": lowercase}

    def _metric(self):
        return _sacrebleu_metrics()[1](**self.options)


class Bleu(_SacreMetric):
    """Sentence BLEU with effective order (short candidates do not score 0 for missing 4-grams)."""

    name = "bleu"

    def __init__(self, tokenize: str | None = None, lowercase: bool = False) -> None:
        self.options = {"tokenize": tokenize, "lowercase": lowercase, "effective_order": True}

    def _metric(self):
        return _sacrebleu_metrics()[0](**self.options)
