"""Exact ROUGE-L F1 between all pairs of candidates, at character or word level.

ROUGE-L F1 (beta = 1) of texts a and b with token sequences of lengths m and n and longest common
subsequence L: P = L/n, R = L/m, F = 2PR/(P+R) (= 2L/(m+n)); 0 when either is empty or L = 0.
The LCS lengths come from rapidfuzz's bit-parallel C++ (``process.cdist`` with ``LCSseq.similarity``,
all pairs of one question at once); F is then computed with the very floating-point operations the
``rouge-score`` package uses, so the values are bit-identical to its ``fmeasure`` (and symmetric).

Tokenisers for word level:
- ``default``: case-folded runs of Unicode letters and digits; every CJK ideograph, kana or other
  unspaced-script character is a token of its own (rouge-score drops them and scores Chinese text 0).
- ``rouge_score``: exactly rouge-score's default tokenizer (lower-case, ASCII ``[a-z0-9]+`` runs, no
  stemming).
- ``whitespace``: split on whitespace, case kept.
Character level compares Unicode code points, whitespace included.
"""

from __future__ import annotations

import functools
import re
import sys
import unicodedata
from collections.abc import Callable, Sequence

import numpy as np

from lmfuse.errors import ConfigError

# Scripts written without spaces between words (CJK ideographs, kana, bopomofo): one token per character.
_UNSPACED = re.compile(
    "[\u2e80-\u2fdf\u3040-\u30ff\u3100-\u312f\u31a0-\u31ff\u3400-\u4dbf\u4e00-\u9fff"
    "\uf900-\ufaff\U00020000-\U0003134f]"
)
_ROUGE_SCORE_WORD = re.compile(r"[a-z0-9]+")


@functools.cache
def _separators() -> re.Pattern[str]:
    """Runs of punctuation, symbols, separators and control characters (Unicode categories P, S, Z, C).

    Letters, digits *and combining marks* stay inside words, so Devanagari or Thai words are not cut at
    their vowel signs (Python's ``\\w`` would cut them). Built once, on first use (~0.2 s).
    """
    ranges, start = [], None
    for cp in range(sys.maxunicode + 2):
        sep = cp <= sys.maxunicode and unicodedata.category(chr(cp))[0] in "PSZC"
        if sep and start is None:
            start = cp
        elif not sep and start is not None:
            ranges.append((start, cp - 1))
            start = None
    body = "".join(re.escape(chr(a)) + (f"-{re.escape(chr(b))}" if b > a else "") for a, b in ranges)
    return re.compile(f"[{body}]+")


def tokenize_default(text: str) -> list[str]:
    """Case-folded runs of letters, digits and marks; each CJK/kana character is its own token."""
    spaced = _UNSPACED.sub(r" \g<0> ", text.casefold())
    return [t for t in _separators().split(spaced) if t]


def tokenize_rouge_score(text: str) -> list[str]:
    """rouge-score's ``DefaultTokenizer(use_stemmer=False)``: lower-case ``[a-z0-9]+`` runs."""
    return _ROUGE_SCORE_WORD.findall(text.lower())


def tokenize_whitespace(text: str) -> list[str]:
    """Whitespace-separated tokens, case kept."""
    return text.split()


WORD_TOKENIZERS: dict[str, Callable[[str], list[str]]] = {
    "default": tokenize_default,
    "rouge_score": tokenize_rouge_score,
    "whitespace": tokenize_whitespace,
}


def word_tokenizer(name: str) -> Callable[[str], list[str]]:
    """The word tokenizer called ``name`` (see ``WORD_TOKENIZERS``)."""
    if name not in WORD_TOKENIZERS:
        raise ConfigError(f"word tokenizer: expected one of {', '.join(WORD_TOKENIZERS)}, found {name!r}")
    return WORD_TOKENIZERS[name]


def lcs_matrix(seqs: Sequence[Sequence], workers: int = 1) -> np.ndarray:
    """LCS lengths of all pairs: ``(n, n)`` int32. ``seqs`` are strings or lists of ints."""
    from rapidfuzz import process
    from rapidfuzz.distance import LCSseq

    return process.cdist(
        seqs, seqs, scorer=LCSseq.similarity, processor=None, dtype=np.int32, workers=workers
    )


def rouge_f_from_lcs(lcs: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """ROUGE-L F1 from LCS lengths ``(n, n)`` and token counts ``(n,)`` → ``(n, n)`` float64.

    Row i is rouge-score's target, column j its prediction; the formula is symmetric bit for bit.
    """
    lcs = lcs.astype(np.float64)
    lengths = np.asarray(lengths, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = lcs / lengths[None, :]
        recall = lcs / lengths[:, None]
        f = 2 * precision * recall / (precision + recall)
    # rouge-score: 0 when either side is empty (0/0 above) or when nothing is shared (P + R = 0).
    f[(lcs == 0) | (lengths[:, None] == 0) | (lengths[None, :] == 0)] = 0.0
    return f


def _as_ids(token_lists: list[list[str]]) -> list[list[int]]:
    """Map tokens to small ints (one vocabulary per question): rapidfuzz hashes ints fastest."""
    vocab: dict[str, int] = {}
    return [[vocab.setdefault(t, len(vocab)) for t in tokens] for tokens in token_lists]


def char_rouge_matrix(texts: Sequence[str], workers: int = 1) -> np.ndarray:
    """Character-level ROUGE-L F1 of all pairs of ``texts``: ``(n, n)`` float64."""
    lengths = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
    return rouge_f_from_lcs(lcs_matrix(list(texts), workers), lengths)


def word_rouge_matrix(
    texts: Sequence[str], tokenizer: Callable[[str], list[str]] = tokenize_default, workers: int = 1
) -> np.ndarray:
    """Word-level ROUGE-L F1 of all pairs of ``texts`` (each tokenised once): ``(n, n)`` float64."""
    ids = _as_ids([tokenizer(t) for t in texts])
    lengths = np.fromiter((len(t) for t in ids), dtype=np.int64, count=len(ids))
    return rouge_f_from_lcs(lcs_matrix(ids, workers), lengths)
