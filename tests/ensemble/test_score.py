"""Ensemble log-likelihood of given texts."""

from __future__ import annotations

import math

import pytest
import torch

from lmfuse.ensemble import Ensemble
from lmfuse.errors import ConfigError

TEXTS = ["85", "hello world", "Q: 6*8= A: 48"]
PROMPTS = ["Q: 37+48= A: ", "say ", "x"]


def direct_logprob(model, tok, prompt: str, text: str) -> tuple[float, int]:
    head = tok(prompt)["input_ids"]
    body = tok(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        lp = model(torch.tensor([head + body])).logits[0].float().log_softmax(-1)
    return sum(float(lp[len(head) - 1 + j, t]) for j, t in enumerate(body)), len(body)


def test_one_member_matches_the_model_log_likelihood(models, tok):
    got = Ensemble([(models["mistral"], tok)]).score(TEXTS, PROMPTS)
    for r, p, t in zip(got, PROMPTS, TEXTS, strict=True):
        lp, n = direct_logprob(models["mistral"], tok, p, t)
        assert r.tokens == n
        assert r.logprob == pytest.approx(lp, abs=1e-3)
        assert r.perplexity == pytest.approx(math.exp(-lp / n), rel=1e-3)


def test_scores_without_prompt_start_after_bos(models, tok):
    (r,) = Ensemble([(models["llama"], tok)]).score(["hello"])
    lp, n = direct_logprob(models["llama"], tok, "", "hello")
    assert r.tokens == n == 5 and r.logprob == pytest.approx(lp, abs=1e-3)


def test_prob_mixture_likelihood(models, tok):
    """Two members with prob combine: each token's probability is the weighted mean of theirs."""
    a, b = models["llama"], models["qwen2"]
    (r,) = Ensemble([(a, tok), (b, tok)], weights=[0.25, 0.75]).score(["12"], ["Q: "])
    ids = tok("Q: ")["input_ids"] + tok("12", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        pa = a(torch.tensor([ids])).logits[0].softmax(-1)
        pb = b(torch.tensor([ids])).logits[0].softmax(-1)
    mix = 0.25 * pa + 0.75 * pb
    n = len(ids)
    expected = math.log(mix[n - 3, ids[n - 2]]) + math.log(mix[n - 2, ids[n - 1]])
    assert r.logprob == pytest.approx(expected, abs=1e-4)


def test_identical_members_score_like_one(models, tok):
    one = Ensemble([(models["qwen2"], tok)], combine="logprob").score(TEXTS, PROMPTS)
    two = Ensemble([(models["qwen2"], tok)] * 2, combine="logprob").score(TEXTS, PROMPTS)
    assert [r.logprob for r in one] == pytest.approx([r.logprob for r in two], abs=1e-4)


def test_score_errors(models, tok):
    ens = Ensemble([(models["llama"], tok)])
    with pytest.raises(ConfigError, match="one per text"):
        ens.score(["a", "b"], ["only one prompt"])


def test_nothing_to_score_or_generate(models, tok):
    ens = Ensemble([(models["llama"], tok)])
    assert ens.score([]) == [] and ens.generate([]) == []
