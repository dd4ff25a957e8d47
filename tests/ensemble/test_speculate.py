"""Speculative ensembling: the plain ensemble's greedy tokens for every k, and its distribution when
sampling (speculative-sampling acceptance rule)."""

from __future__ import annotations

import pytest
import torch

from lmfuse.ensemble import Ensemble
from lmfuse.ensemble.combine import COMBINE, apply_temperature, apply_top_k
from lmfuse.errors import ConfigError
from lmfuse.testing import tiny_model

from .conftest import PROMPTS

NEW = 16


@pytest.fixture(scope="module")
def members(models, tok):
    return [(models[a], tok) for a in ("llama", "mistral", "qwen2")]


@pytest.fixture(scope="module")
def eos_model(tok):
    model = tiny_model("llama", vocab_size=len(tok), seed=11)
    with torch.no_grad():
        model.lm_head.weight[tok.eos_token_id] *= 2.5  # some rows stop early
    return model


@pytest.mark.parametrize("k", range(1, 7))
def test_greedy_tokens_equal_the_plain_ensemble(members, batch, k):
    ids, mask = batch
    plain = Ensemble(members).generate_ids(ids, mask, max_new_tokens=NEW)
    ens = Ensemble(members, speculate=k)
    assert torch.equal(ens.generate_ids(ids, mask, max_new_tokens=NEW), plain)
    assert 1.0 <= ens.stats.mean_accepted <= k
    assert ens.stats.mean_accepted > 1.0 or k == 1  # some drafts are kept, or this tests nothing


@pytest.mark.parametrize("k", [2, 5])
def test_rows_that_stop_early_and_stop_strings(members, eos_model, tok, batch, k):
    pair = [(eos_model, tok), members[1]]
    ids, mask = batch
    plain = Ensemble(pair).generate_ids(ids, mask, max_new_tokens=20)
    assert (plain[:, ids.shape[1] :] == tok.eos_token_id).any(), "test needs a row that stops"
    assert torch.equal(Ensemble(pair, speculate=k).generate_ids(ids, mask, max_new_tokens=20), plain)
    want = Ensemble(pair).complete(PROMPTS, max_new_tokens=20, stop=["e", "5"])
    got = Ensemble(pair, speculate=k).complete(PROMPTS, max_new_tokens=20, stop=["e", "5"], logprobs=2)
    assert [(c.text, c.finish_reason, c.completion_tokens) for c in got] == [
        (c.text, c.finish_reason, c.completion_tokens) for c in want
    ]
    for g, w in zip(got, want, strict=True):  # the same combined distributions, position by position
        assert torch.allclose(torch.tensor(g.token_logprobs), torch.tensor(w.token_logprobs), atol=1e-4)


def test_adaptive_k_gives_the_same_tokens(members, batch):
    ids, mask = batch
    plain = Ensemble(members).generate_ids(ids, mask, max_new_tokens=NEW)
    ens = Ensemble(members, speculate=6, adaptive=True)
    assert torch.equal(ens.generate_ids(ids, mask, max_new_tokens=NEW), plain)


def test_bad_options(members, tok, bpe):
    with pytest.raises(ConfigError) as e:
        Ensemble(members, speculate=-1, gate=0.5)
    assert "speculate" in str(e.value)
    with pytest.raises(ConfigError, match="share a tokenizer"):
        Ensemble([members[0], (tiny_model("llama", vocab_size=len(bpe)), bpe)], speculate=2)


def _exact(members, prompt_ids, temperature, top_k):
    """The plain ensemble's distribution over two-token continuations, by enumeration."""

    def mixed(ids):
        with torch.no_grad():
            logits = [m(ids).logits[:, -1].float() for m, _ in members]
        return apply_top_k(
            apply_temperature(COMBINE["prob"](logits, [0.5, 0.5]), temperature), top_k
        ).softmax(-1)

    p1 = mixed(prompt_ids)[0]
    firsts = p1.nonzero().flatten()
    ids = torch.cat([prompt_ids.repeat(len(firsts), 1), firsts[:, None]], 1)
    p2 = mixed(ids)
    return {
        (int(a), int(b)): float(p1[a] * p2[i, b])
        for i, a in enumerate(firsts)
        for b in p2[i].nonzero().flatten()
    }


def _tv(p: dict, q: dict) -> float:
    return 0.5 * sum(abs(p.get(x, 0.0) - q.get(x, 0.0)) for x in set(p) | set(q))


def test_sampling_follows_the_plain_ensemble_distribution(models, tok):
    import copy

    members = []
    for arch in ("llama", "qwen2"):  # peakier copies: distributions far enough apart to tell
        m = copy.deepcopy(models[arch])
        with torch.no_grad():
            m.lm_head.weight *= 5
        members.append((m, tok))
    prompt = tok(["Q: 6*8="], return_tensors="pt")["input_ids"]
    temperature, top_k, n = 1.0, 4, 3000
    exact = _exact(members, prompt, temperature, top_k)
    lead_only = _exact([members[0]] * 2, prompt, temperature, top_k)
    bound = 0.07  # E[TV] of 3000 samples over 16 outcomes is ~0.03
    assert _tv(exact, lead_only) > 3 * bound, "the lead's own drafts must be distinguishable"
    ens = Ensemble(members, speculate=2)
    out = ens.generate_ids(
        prompt.repeat(n, 1), max_new_tokens=2, temperature=temperature, top_k=top_k, seed=0, ignore_eos=True
    )[:, -2:]
    assert 1.0 < ens.stats.mean_accepted < 2.0  # both kept drafts and rejections happened
    seen: dict = {}
    for a, b in out.tolist():
        seen[(a, b)] = seen.get((a, b), 0) + 1 / n
    assert _tv(seen, exact) < bound
