"""Exact ROUGE-L F1 between all pairs of candidates, at character or word level.

ROUGE-L F1 (beta = 1) of texts a and b with token sequences of lengths m and n and longest common
subsequence L: P = L/n, R = L/m, F = 2PR/(P+R) (= 2L/(m+n)); 0 when either is empty or L = 0.
The LCS lengths come from rapidfuzz's bit-parallel C++ (``process.cpdist`` with ``LCSseq.similarity``
over the pairs of many questions at once, multi-threaded); F is then computed with the very floating-point operations the
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
SMALL_BATCH = 512
"""Fewer pairs than this run on the calling thread (``vote`` on one question: 28 pairs for 8)."""


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


def pair_lcs(a: Sequence[Sequence], b: Sequence[Sequence], workers: int = -1) -> np.ndarray:
    """LCS length of each pair ``(a[k], b[k])``: ``(p,)`` int64. Items are strings or lists of ints."""
    from rapidfuzz import process
    from rapidfuzz.distance import LCSseq

    if not a:
        return np.zeros(0, dtype=np.int64)
    if len(a) < SMALL_BATCH:  # one question: starting a thread pool costs more than it saves
        workers = 1
    lcs = process.cpdist(a, b, scorer=LCSseq.similarity, processor=None, dtype=np.int64, workers=workers)
    return np.asarray(lcs, dtype=np.int64)


def rouge_f(lcs: np.ndarray, len_target: np.ndarray, len_prediction: np.ndarray) -> np.ndarray:
    """ROUGE-L F1 from LCS lengths and token counts, all ``(p,)`` → ``(p,)`` float64.

    The floating-point operations are rouge-score's own (P = L/len_prediction, R = L/len_target,
    F = 2*P*R/(P+R)), so the values are bit-identical to its ``fmeasure``; swapping target and
    prediction gives the same bits (2*P is exact, + and * commute).
    """
    lcs = lcs.astype(np.float64)
    len_t = np.asarray(len_target, dtype=np.float64)
    len_p = np.asarray(len_prediction, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = lcs / len_p
        recall = lcs / len_t
        f = 2 * precision * recall / (precision + recall)
    # rouge-score: 0 when either side is empty (0/0 above) or nothing is shared (P + R = 0).
    f[(lcs == 0) | (len_t == 0) | (len_p == 0)] = 0.0
    return f


@functools.lru_cache(maxsize=64)
def _upper(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices of the strict upper triangle of an ``(n, n)`` matrix, in row order."""
    return np.triu_indices(n, 1)


def rouge_matrices(groups: Sequence[Sequence[Sequence]], workers: int = -1) -> list[np.ndarray]:
    """ROUGE-L F1 of all pairs within each group: one ``(n_q, n_q)`` float64 matrix per group.

    Items are strings (characters are the tokens) or lists of int token ids. The upper-triangle
    pairs of every group go to rapidfuzz in one multi-threaded call (``workers``, -1 = all cores).
    """
    a, b, sizes = [], [], []
    for group in groups:
        n = len(group)
        sizes.append(n)
        for i in range(n):
            for j in range(i + 1, n):
                a.append(group[i])
                b.append(group[j])
    len_a = np.fromiter(map(len, a), dtype=np.int64, count=len(a))
    len_b = np.fromiter(map(len, b), dtype=np.int64, count=len(b))
    f = rouge_f(pair_lcs(a, b, workers), len_a, len_b)
    out, start = [], 0
    for group, n in zip(groups, sizes, strict=True):
        rows, cols = _upper(n)
        m = np.zeros((n, n), dtype=np.float64)
        m[rows, cols] = f[start : start + rows.size]
        m[cols, rows] = m[rows, cols]
        m[np.diag_indices(n)] = [1.0 if len(x) else 0.0 for x in group]
        out.append(m)
        start += rows.size
    return out


def token_ids(
    groups: Sequence[Sequence[str]], tokenizer: Callable[[str], list[str]]
) -> list[list[list[int]]]:
    """Tokenise every text once and map tokens to ints (rapidfuzz hashes ints fastest)."""
    vocab: dict[str, int] = {}
    return [[[vocab.setdefault(t, len(vocab)) for t in tokenizer(text)] for text in g] for g in groups]


def char_rouge_matrix(texts: Sequence[str], workers: int = -1) -> np.ndarray:
    """Character-level ROUGE-L F1 of all pairs of ``texts``: ``(n, n)`` float64."""
    return rouge_matrices([list(texts)], workers)[0]


def word_rouge_matrix(
    texts: Sequence[str], tokenizer: Callable[[str], list[str]] = tokenize_default, workers: int = -1
) -> np.ndarray:
    """Word-level ROUGE-L F1 of all pairs of ``texts``: ``(n, n)`` float64."""
    return rouge_matrices(token_ids([texts], tokenizer), workers)[0]
