"""ROUGE-L F1 equals rouge-score's F-measure bit for bit, at character and word level."""

import random

import numpy as np
import pytest
from rouge_score import rouge_scorer, tokenizers

from lmfuse.vote.rouge import (
    char_rouge_matrix,
    tokenize_default,
    tokenize_rouge_score,
    word_rouge_matrix,
)


class _Chars(tokenizers.Tokenizer):
    def tokenize(self, text):
        return list(text)


CHAR_SCORER = rouge_scorer.RougeScorer(["rougeL"], tokenizer=_Chars())
WORD_SCORER = rouge_scorer.RougeScorer(["rougeL"])  # rouge-score's default tokenizer, no stemmer

ALPHABETS = {
    "ascii": "abcde fgh,.!?0123456789ABC",
    "unicode": "aé中文字😀\u0301\u200b ßΣσς-ـا",
    "tiny": "ab",
}


def _random_texts(rng, alphabet, n, max_len):
    return [
        "".join(rng.choice(alphabet) for _ in range(rng.choice([0, 1, 2, rng.randint(0, max_len)])))
        for _ in range(n)
    ]


def _reference(scorer, texts):
    n = len(texts)
    return np.array(
        [[scorer.score(texts[i], texts[j])["rougeL"].fmeasure for j in range(n)] for i in range(n)]
    )


@pytest.mark.parametrize("alphabet", list(ALPHABETS))
def test_char_level_is_bit_identical_to_rouge_score(alphabet):
    rng = random.Random(alphabet)
    for _ in range(20):
        texts = _random_texts(rng, ALPHABETS[alphabet], 6, 60)
        ours = char_rouge_matrix(texts)
        ref = _reference(CHAR_SCORER, texts)
        assert np.array_equal(ours, ref), (texts, ours - ref)


def test_word_level_with_rouge_score_tokenizer_is_bit_identical():
    rng = random.Random(1)
    words = [
        "the",
        "The",
        "cat",
        "Sat",
        "on",
        "mat",
        "42",
        "x_y",
        "naïve",
        "中文",
        "don't",
        "C3PO",
        "İstanbul",
        "K",
    ]
    for _ in range(30):
        texts = [" ".join(rng.choice(words) for _ in range(rng.randint(0, 15))) for _ in range(5)]
        ours = word_rouge_matrix(texts, tokenize_rouge_score)
        assert np.array_equal(ours, _reference(WORD_SCORER, texts)), texts


def test_rouge_score_tokenizer_matches_the_package():
    tok = tokenizers.DefaultTokenizer(use_stemmer=False)
    for text in ["Hello, World_x! 中文abc", "İstanbul KELVIN K 3.14 don't", "", "   ", "ÀB-cd_9"]:
        assert tokenize_rouge_score(text) == tok.tokenize(text)


def test_matrix_is_symmetric_bitwise_with_unit_diagonal_for_nonempty():
    texts = ["kitten sitting", "sitting kitten", "mitten", "", "中文"]
    m = char_rouge_matrix(texts)
    assert np.array_equal(m, m.T)
    assert list(np.diag(m)) == [1.0, 1.0, 1.0, 0.0, 1.0]


def test_default_word_tokenizer_keeps_cjk_and_marks():
    assert tokenize_default("我爱北京, ok!") == ["我", "爱", "北", "京", "ok"]
    assert tokenize_default("नमस्ते दुनिया") == ["नमस्ते", "दुनिया"]  # vowel signs stay inside words
    assert tokenize_default("Straße STRASSE") == ["strasse", "strasse"]
    # rouge-score scores Chinese text 0; the default tokenizer does not.
    texts = ["我爱北京天安门", "我爱北京"]
    assert WORD_SCORER.score(*texts)["rougeL"].fmeasure == 0.0
    assert word_rouge_matrix(texts)[0, 1] == pytest.approx(2 * 4 / (7 + 4))


def test_very_long_strings():
    rng = random.Random(0)
    a = "".join(rng.choice("abcd") for _ in range(100_000))
    b = a[::2] + a[1::2]
    m = char_rouge_matrix([a, b])
    assert 0.5 < m[0, 1] < 1.0  # LCS ≥ 50,000 of 100,000 characters
    assert m[0, 0] == 1.0
