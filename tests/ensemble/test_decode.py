"""The shared-tokenizer decoder: parity with transformers' generate and with a no-cache reference."""

from __future__ import annotations

import pytest
import torch

from lmfuse.ensemble import COMBINE, Ensemble
from lmfuse.ensemble.naive import naive_generate_ids
from lmfuse.testing import tiny_model

from .conftest import PROMPTS

NEW = 12


def hf_greedy(model, tok, ids, mask, new=NEW):
    return model.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=new,
        do_sample=False,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
    )


@pytest.mark.parametrize("arch", ["llama", "mistral", "qwen2"])
def test_one_member_equals_its_own_greedy_generate(models, tok, batch, arch):
    ids, mask = batch
    assert len(set(mask.sum(1).tolist())) > 1  # prompts of different lengths: real left padding
    expected = hf_greedy(models[arch], tok, ids, mask)
    got = Ensemble([(models[arch], tok)]).generate_ids(ids, mask, max_new_tokens=NEW)
    assert torch.equal(got, expected)


def test_one_member_stops_on_eos_like_generate(tok, batch):
    # A model whose EOS logit is boosted stops early in some rows; the pad fill must match generate's.
    model = tiny_model("llama", vocab_size=len(tok), seed=11)
    with torch.no_grad():
        model.lm_head.weight[tok.eos_token_id] *= 2.5
    ids, mask = batch
    expected = hf_greedy(model, tok, ids, mask, new=20)
    assert (expected[:, ids.shape[1] :] == tok.eos_token_id).any(), "test needs a row that stops"
    got = Ensemble([(model, tok)]).generate_ids(ids, mask, max_new_tokens=20)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("combine", sorted(COMBINE))
def test_two_identical_members_equal_one(models, tok, batch, combine):
    ids, mask = batch
    one = Ensemble([(models["qwen2"], tok)], combine=combine).generate_ids(ids, mask, max_new_tokens=NEW)
    pair = [(models["qwen2"], tok)] * 2
    assert torch.equal(Ensemble(pair, combine=combine).generate_ids(ids, mask, max_new_tokens=NEW), one)


@pytest.mark.parametrize("combine", sorted(COMBINE))
def test_weights_one_zero_equal_member_zero(models, tok, batch, combine):
    ids, mask = batch
    expected = hf_greedy(models["llama"], tok, ids, mask)
    pair = [(models["llama"], tok), (models["mistral"], tok)]
    got = Ensemble(pair, weights=[1, 0], combine=combine).generate_ids(ids, mask, max_new_tokens=NEW)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("combine", sorted(COMBINE))
def test_cached_equals_no_cache_reference(models, tok, batch, combine):
    """Three architectures with one tokenizer; the cached decoder against full-prefix recomputation."""
    ids, mask = batch
    ens = Ensemble(
        [(models[a], tok) for a in ("llama", "mistral", "qwen2")], weights=[0.5, 0.3, 0.2], combine=combine
    )
    expected = naive_generate_ids(ens.members, ens.weights, combine, ids, mask, NEW)
    got = ens.generate_ids(ids, mask, max_new_tokens=NEW)
    assert torch.equal(got, expected)
    # and the ensemble really differs from each member (otherwise the test would prove little)
    assert all(not torch.equal(got, hf_greedy(models[a], tok, ids, mask)) for a in models)


def test_generate_batches_do_not_change_results(models, tok):
    ens = Ensemble([(models["llama"], tok), (models["qwen2"], tok)])
    assert ens.generate(PROMPTS, max_new_tokens=8, batch_size=1) == ens.generate(PROMPTS, max_new_tokens=8)


def test_seeded_sampling_is_reproducible(models, tok):
    ens = Ensemble([(models["llama"], tok), (models["mistral"], tok)])
    kw = dict(max_new_tokens=16, temperature=1.0, top_p=0.95, top_k=40)
    a = ens.generate(PROMPTS, seed=3, **kw)
    assert a == ens.generate(PROMPTS, seed=3, **kw)
    assert a != ens.generate(PROMPTS, seed=4, **kw)
    assert a != ens.generate(PROMPTS, max_new_tokens=16)  # sampled, not greedy


def test_padded_output_head_is_sliced(tok, batch):
    """A head with more rows than the tokenizer (like Qwen's) never yields ids past the vocabulary."""
    small = tiny_model("llama", vocab_size=len(tok), seed=5)
    padded = tiny_model("llama", vocab_size=len(tok) + 21, seed=5)
    padded.load_state_dict(
        {
            k: torch.cat([v, torch.zeros(21, v.shape[1])]) if v.shape[0] == len(tok) else v
            for k, v in small.state_dict().items()
        }
    )
    with torch.no_grad():
        padded.lm_head.weight[len(tok) :] = 5.0  # unused rows that would win every argmax if not sliced
    ids, mask = batch
    expected = hf_greedy(small, tok, ids, mask)
    assert torch.equal(Ensemble([(padded, tok)]).generate_ids(ids, mask, max_new_tokens=NEW), expected)
    pair = Ensemble([(small, tok), (padded, tok)])
    assert pair.vocab_sizes == [len(tok), len(tok)]
    assert torch.equal(pair.generate_ids(ids, mask, max_new_tokens=NEW), expected)


def test_stop_strings_cut_the_text(models, tok):
    ens = Ensemble([(models["llama"], tok), (models["qwen2"], tok)])
    full = ens.generate(PROMPTS, max_new_tokens=16)
    marker = full[0][5:7]  # a string known to appear in row 0's completion
    cut = ens.generate(PROMPTS, max_new_tokens=16, stop=[marker])
    assert cut[0] == full[0][: full[0].find(marker)]
    for f, c in zip(full[1:], cut[1:], strict=True):
        assert c == (f[: f.find(marker)] if marker in f else f)


@pytest.mark.parametrize("gate", [0.05, 0.2, 0.5])
def test_gated_decoding_catches_up_correctly(models, tok, batch, gate):
    """Skipped members catch up in one chunk: the result equals recomputing everything each step."""
    ids, mask = batch
    ens = Ensemble([(models["llama"], tok), (models["qwen2"], tok)], gate=gate)
    expected = naive_generate_ids(ens.members, ens.weights, "prob", ids, mask, NEW, gate=gate)
    assert torch.equal(ens.generate_ids(ids, mask, max_new_tokens=NEW), expected)
    assert 0.0 <= ens.stats.ensembled_fraction <= 1.0
    if (
        gate == 0.2
    ):  # some rows ensembled and some not in the same steps: the other members run on a sub-batch
        assert 0.0 < ens.stats.ensembled_fraction < 1.0


def test_gate_extremes(models, tok, batch):
    ids, mask = batch
    pair = [(models["llama"], tok), (models["qwen2"], tok)]
    never = Ensemble(pair, gate=1e-9)  # the lead is always "confident": it decodes alone
    assert torch.equal(
        never.generate_ids(ids, mask, max_new_tokens=NEW), hf_greedy(models["llama"], tok, ids, mask)
    )
    assert never.stats.ensembled_fraction == 0.0
    always = Ensemble(pair, gate=1.0)
    assert torch.equal(
        always.generate_ids(ids, mask, max_new_tokens=NEW),
        Ensemble(pair).generate_ids(ids, mask, max_new_tokens=NEW),
    )
    assert always.stats.ensembled_fraction == 1.0


def test_ignore_eos_decodes_every_token(tok, batch):
    model = tiny_model("llama", vocab_size=len(tok), seed=11)
    with torch.no_grad():
        model.lm_head.weight[tok.eos_token_id] *= 2.5
    ids, mask = batch
    ens = Ensemble([(model, tok)])
    full = ens.generate_ids(ids, mask, max_new_tokens=20, ignore_eos=True)
    assert full.shape[1] == ids.shape[1] + 20 and ens.stats.row_steps == 20 * len(ids)
    expected = model.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=20,
        min_new_tokens=20,
        do_sample=False,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
    )
    stopped = ens.generate_ids(ids, mask, max_new_tokens=20)
    stopped_rows = [r for r in range(len(ids)) if tok.eos_token_id in stopped[r, ids.shape[1] :].tolist()]
    assert stopped_rows, "test needs a row that stops"
    # up to each row's first EOS, ignoring EOS changes nothing
    for r in range(len(ids)):
        row = stopped[r, ids.shape[1] :].tolist()
        n = row.index(tok.eos_token_id) if tok.eos_token_id in row else len(row)
        assert full[r, ids.shape[1] : ids.shape[1] + n].tolist() == row[:n]
        if r in stopped_rows:  # ... and decoding goes on after it
            assert set(full[r, ids.shape[1] + n + 1 :].tolist()) != {tok.pad_token_id}
    assert expected.shape == full.shape
