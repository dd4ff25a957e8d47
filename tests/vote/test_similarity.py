"""The similarity registry and the non-ROUGE similarities (exact, chrf, bleu, combination)."""

import numpy as np
import pytest
from sacrebleu.metrics import BLEU, CHRF

from lmfuse.errors import ConfigError
from lmfuse.vote import Similarity, get_similarity, register_similarity, similarity_names, vote
from lmfuse.vote.combine import normalize_matrix
from lmfuse.vote.similarity import _USER

TEXTS = ["The cat sat on the mat.", "the cat sat on a mat", "A dog barked loudly.", "猫が座った", ""]


def test_builtin_names_are_short_and_not_substrings_of_each_other():
    names = similarity_names()
    assert {"char_rouge_l", "word_rouge_l", "exact", "answer", "chrf", "bleu", "embedding"} <= set(names)
    for a in names:
        assert not any(a != b and a in b for b in names), a


@pytest.mark.parametrize(("name", "metric"), [("chrf", CHRF()), ("bleu", BLEU(effective_order=True))])
def test_sacrebleu_metrics_match_sacrebleu_in_hypothesis_reference_orientation(name, metric):
    m = get_similarity(name).matrix(TEXTS)
    for i, hyp in enumerate(TEXTS):
        for j, ref in enumerate(TEXTS):
            assert m[i, j] == metric.sentence_score(hyp, [ref]).score / 100.0


def test_exact_normalises_unicode_case_and_spaces():
    m = get_similarity("exact").matrix(["Ｈello  World", "hello world", "hello, world"])
    assert m.tolist() == [[1, 1, 0], [1, 1, 0], [0, 0, 1]]


def test_options_are_checked():
    sim = get_similarity("word_rouge_l", tokenizer="rouge_score")
    assert sim.matrix(["中文", "中文"])[0, 1] == 0.0  # rouge-score's tokenizer drops CJK
    with pytest.raises(ConfigError, match="accepts options"):
        get_similarity("word_rouge_l", tokeniser="default")
    with pytest.raises(ConfigError, match="expected one of default, rouge_score, whitespace"):
        get_similarity("word_rouge_l", tokenizer="nltk")
    with pytest.raises(ConfigError, match="kind"):
        get_similarity("answer", kind="letters")


def test_register_a_similarity_and_use_it_by_name():
    @register_similarity("length_ratio")
    class LengthRatio(Similarity):
        def matrix(self, texts):
            lens = np.array([len(t) for t in texts], dtype=float) + 1
            return np.minimum(lens[:, None], lens[None, :]) / np.maximum(lens[:, None], lens[None, :])

    try:
        r = vote(["aaaa", "aaa", "a"], "length_ratio")
        assert r.index == 1 and "length_ratio" in similarity_names()
        with pytest.raises(ConfigError, match="already registered"):
            register_similarity("length_ratio")
        with pytest.raises(ConfigError, match="lower-case"):
            register_similarity("Bad-Name")
    finally:
        _USER.pop("length_ratio", None)


def test_wrong_shape_from_a_similarity_is_reported():
    class Broken(Similarity):
        name = "broken"

        def matrix(self, texts):
            return np.zeros((1, 1))

    with pytest.raises(ConfigError, match="returned shape"):
        vote(["a", "b"], Broken())


def test_zscore_and_rank_normalisation():
    m = np.array([[9.0, 1.0, 2.0], [1.0, 9.0, 3.0], [2.0, 3.0, 9.0]])
    z = normalize_matrix(m, "zscore")
    off = ~np.eye(3, dtype=bool)
    assert np.diag(z).tolist() == [0, 0, 0]
    assert z[off].mean() == pytest.approx(0) and z[off].std() == pytest.approx(1)
    r = normalize_matrix(m, "rank")
    # off-diagonal values 1,1,2,2,3,3 → mean 0-based ranks 0.5, 2.5, 4.5, divided by 5
    assert (r[0, 1], r[0, 2], r[1, 2]) == (0.1, 0.5, 0.9)
    assert normalize_matrix(np.ones((3, 3)), "zscore").tolist() == np.zeros((3, 3)).tolist()
    assert normalize_matrix(np.ones((1, 1)), "rank").tolist() == [[0.0]]


def test_combined_similarities_weight_their_normalised_votes():
    # char ROUGE favours candidate 0, exact match favours the duplicated candidate 1/2.
    cands = ["abcdefgh", "abcd", "abcd", "efgh", "abcdefgx"]
    char = vote(cands, "char_rouge_l")
    ex = vote(cands, "exact")
    assert char.index == 0 and ex.index == 1
    assert vote(cands, ["char_rouge_l", "exact"], [1.0, 0.0]).index == char.index
    assert vote(cands, ["char_rouge_l", "exact"], [0.0, 1.0]).index == ex.index
    both = vote(cands, ["char_rouge_l", "exact"], normalize="rank")
    assert set(both.components) == {"char_rouge_l", "exact"}
    assert np.array_equal(both.components["exact"], ex.matrix)


def test_a_similarity_class_and_a_bad_factory():
    from lmfuse.vote.similarity import CharRougeL

    assert vote(["abc", "abd", "xyz"], CharRougeL).index == 0

    @register_similarity("not_a_similarity")
    def factory():
        return lambda a, b: 1.0

    try:
        with pytest.raises(ConfigError, match="expected a Similarity"):
            vote(["a", "b"], "not_a_similarity")
    finally:
        _USER.pop("not_a_similarity", None)
