"""Speculative ensembling over byte-aligned members: the plain byte-aligned ensemble's greedy text for
every k, batched (rows accept different lengths), with different tokenizers in either order."""

from __future__ import annotations

import pytest
import torch

from lmfuse import zoo
from lmfuse.ensemble import Ensemble
from lmfuse.testing import tiny_model
from lmfuse.zoo.questions import eval_set

from .conftest import PROMPTS


@pytest.fixture(scope="module")
def zoo_pair():
    return [zoo.load("base"), zoo.load("generalist")]


@pytest.fixture(scope="module")
def tiny(models, tok, bpe, spm):
    """A char-level, a byte-level BPE and a SentencePiece-style member."""
    return {
        "char": (models["llama"], tok),
        "bpe": (tiny_model("qwen2", vocab_size=len(bpe), seed=4), bpe),
        "spm": (tiny_model("mistral", vocab_size=len(spm), seed=5), spm),
    }


@pytest.fixture(scope="module")
def plain_texts():
    """The plain ensemble's greedy texts, computed once per members, prompts and options (not once per k)."""
    cache: dict = {}

    def plain(members, prompts, **kw):
        key = (tuple(id(m) for member in members for m in member), tuple(prompts), tuple(sorted(kw.items())))
        if key not in cache:
            cache[key] = (members, Ensemble(members).generate(prompts, batch_size=len(prompts), **kw))
        return cache[key][1]

    return plain


def _same_text(plain_texts, members, prompts, k, **kw):
    plain = plain_texts(members, prompts, **kw)
    ens = Ensemble(members, speculate=k)
    assert not ens.shared_vocab
    assert ens.generate(prompts, batch_size=len(prompts), **kw) == plain
    assert 1.0 <= ens.stats.mean_accepted <= k
    return ens.stats.mean_accepted


@pytest.mark.parametrize("k", range(1, 7))
def test_zoo_greedy_text_equals_the_plain_ensemble(zoo_pair, plain_texts, k):
    prompts = [q.prompt for q in eval_set()][:8]
    accepted = _same_text(plain_texts, zoo_pair, prompts, k, max_new_tokens=12)
    accepted_long = _same_text(plain_texts, zoo_pair[::-1], prompts, k, max_new_tokens=16, ignore_eos=True)
    assert k == 1 or max(accepted, accepted_long) > 1.0  # some drafts are kept, or this tests nothing


@pytest.mark.parametrize("k", range(1, 7))
@pytest.mark.parametrize("lead, other", [("char", "bpe"), ("bpe", "char"), ("char", "spm"), ("spm", "bpe")])
def test_tiny_char_bpe_spm_greedy_text_equals_the_plain_ensemble(tiny, plain_texts, lead, other, k):
    accepted = _same_text(plain_texts, [tiny[lead], tiny[other]], PROMPTS, k, max_new_tokens=16)
    assert k == 1 or accepted > 1.0


def test_three_members_adaptive_stop_strings_and_logprobs(tiny):
    members = [tiny["char"], tiny["bpe"], tiny["spm"]]
    kw = dict(max_new_tokens=20, stop=["e", "5"])
    want = Ensemble(members).complete(PROMPTS, logprobs=2, **kw)
    for ens in (Ensemble(members, speculate=4), Ensemble(members, speculate=6, adaptive=True)):
        got = ens.complete(PROMPTS, logprobs=2, **kw)
        assert [(c.text, c.finish_reason, c.completion_tokens) for c in got] == [
            (c.text, c.finish_reason, c.completion_tokens) for c in want
        ]
        for g, w in zip(got, want, strict=True):  # the same combined distributions, step by step
            assert g.token_logprobs == pytest.approx(w.token_logprobs, abs=1e-4)


def _peaky(model):
    import copy

    out = copy.deepcopy(model)
    with torch.no_grad():
        out.lm_head.weight *= 5  # distributions far enough apart to tell
    return out


@pytest.mark.parametrize("order", ["char lead", "bpe lead"])
def test_sampling_follows_the_plain_byte_aligned_distribution(tiny, order):
    """Speculative sampling over byte candidates: two-step continuations of many rows, against the plain
    byte-aligned ensemble's (different seeds: two samples of one distribution), and far from the lead's
    own."""
    from collections import Counter

    members = [(_peaky(tiny["char"][0]), tiny["char"][1]), (_peaky(tiny["bpe"][0]), tiny["bpe"][1])]
    members = members if order == "char lead" else members[::-1]
    n = 1500
    prompts = ["Q: 6*8="] * n
    kw = dict(max_new_tokens=2, temperature=1.0, top_k=4, ignore_eos=True, batch_size=n)

    def dist(texts):
        return {t: c / n for t, c in Counter(texts).items()}

    def tv(p, q):
        return 0.5 * sum(abs(p.get(x, 0.0) - q.get(x, 0.0)) for x in set(p) | set(q))

    plain = dist(Ensemble(members).generate(prompts, seed=1, **kw))
    lead = dist(Ensemble(members[:1]).generate(prompts, seed=1, **kw))
    ens = Ensemble(members, speculate=2)
    spec = dist(ens.generate(prompts, seed=0, **kw))
    assert 1.0 < ens.stats.mean_accepted < 2.0  # both kept drafts and rejections happened
    bound = 0.08  # E[TV] of two samples of 1500 over ~12 outcomes is ~0.03
    assert tv(plain, lead) > 3 * bound, "the lead's own drafts must be distinguishable"
    assert tv(spec, plain) < bound


def test_a_verifier_whose_tokens_rewrite_ends_the_chain(tiny, bpe):
    """The BPE member follows drafts "t", "h", then "e q" (not one of its tokens): its own tokenization
    of "the q" rewrites "t h" as "t he", so only the first three drafted positions are verifiable; those
    get exactly the log-probs a fresh cache gives, and the cache then rolls back consistently."""
    from lmfuse.ensemble.align import VocabMap
    from lmfuse.ensemble.member import make_member
    from lmfuse.ensemble.speculate_cross import _verify
    from lmfuse.ensemble.track import TrackBatch

    member = make_member(*tiny["bpe"], "bpe")
    vmap = VocabMap.of(member)
    prompts = [
        bpe("hi", add_special_tokens=False)["input_ids"],
        bpe("Q: 1", add_special_tokens=False)["input_ids"],
    ]
    batch = TrackBatch(member, vmap, [list(p) for p in prompts], member.device)
    batch.sync([0, 1])
    drafts = {0: [b"t", b"h", b"e q"], 1: [b"+", b"2"]}
    got = _verify(batch, [0, 1], [b"", b""], drafts)
    assert [len(got[0]), len(got[1])] == [3, 3]  # row 0's chain ends before "e q"; row 1 has all
    for r in (0, 1):
        for track, logp in got[r]:
            fresh = TrackBatch(member, vmap, [track.want], member.device)
            want = fresh.sync([0])[0].log_softmax(-1)
            assert torch.allclose(logp, want, atol=1e-4)
    # after the round row 0 kept "t" and "he" (rewritten), row 1 kept "+": the cache rolls back to that
    for r, text in ((0, b"the"), (1, b"+")):
        batch.tracks[r].advance(text[:1])
        batch.tracks[r].advance(text)
    logits = batch.sync([0, 1])
    for r in (0, 1):
        fresh = TrackBatch(member, vmap, [batch.tracks[r].want], member.device)
        assert torch.allclose(logits[r], fresh.sync([0])[0], atol=1e-4)
