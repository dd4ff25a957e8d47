"""Byte-aligned decoding across different tokenizers."""

from __future__ import annotations

import pytest
import torch

from lmfuse.ensemble import COMBINE, Ensemble
from lmfuse.ensemble.align import VocabMap
from lmfuse.ensemble.member import make_member
from lmfuse.ensemble.track import Track, TrackBatch
from lmfuse.errors import IncompatibleModelsError
from lmfuse.testing import tiny_model

from .conftest import PROMPTS, without_specials


@pytest.fixture(scope="module")
def bpe_model(bpe):
    return tiny_model("qwen2", vocab_size=len(bpe), seed=4)


@pytest.mark.parametrize("combine", sorted(COMBINE))
def test_bytes_alignment_of_one_tokenizer_equals_shared_ids(models, tok, combine):
    pair = [(without_specials(models["llama"], tok), tok), (without_specials(models["qwen2"], tok), tok)]
    shared = Ensemble(pair, combine=combine, weights=[0.6, 0.4])
    cross = Ensemble(pair, combine=combine, weights=[0.6, 0.4], align="bytes", union_top_k=0)
    assert shared.shared_vocab and not cross.shared_vocab
    ids, mask = tok(PROMPTS, return_tensors="pt", padding=True).values()
    new = shared.generate_ids(ids, mask, max_new_tokens=12)[:, ids.shape[1] :]
    # precondition: no pad/bos/unk was chosen before EOS (special tokens have no bytes)
    chosen = {t for row in new.tolist() for t in row[: row.index(2) if 2 in row else None]}
    assert not chosen & {tok.pad_token_id, tok.bos_token_id, tok.unk_token_id}
    assert cross.generate(PROMPTS, max_new_tokens=12) == shared.generate(PROMPTS, max_new_tokens=12)


def test_whole_vocabulary_union_equals_top_k_at_vocabulary_size(models, tok, bpe, bpe_model):
    """``union_top_k=0`` takes every token of every member, as a k covering both vocabularies does."""
    pair = [(models["llama"], tok), (bpe_model, bpe)]
    full = Ensemble(pair, union_top_k=0).generate(PROMPTS, max_new_tokens=8)
    assert Ensemble(pair, union_top_k=len(bpe)).generate(PROMPTS, max_new_tokens=8) == full


def test_different_tokenizers_give_valid_text(models, tok, bpe, bpe_model):
    ens = Ensemble([(models["llama"], tok), (bpe_model, bpe)])
    assert not ens.shared_vocab
    out = ens.generate(PROMPTS, max_new_tokens=16)
    assert len(out) == len(PROMPTS)
    for text in out:
        assert isinstance(text, str) and "\ufffd" not in text
        assert text.encode("utf-8").decode("utf-8") == text
    # both members shape the result: it differs from the char member decoding alone
    alone = Ensemble([(models["llama"], tok)]).generate(PROMPTS, max_new_tokens=16)
    assert out != alone


def test_cross_sampling_is_reproducible(models, tok, bpe, bpe_model):
    ens = Ensemble([(bpe_model, bpe), (models["mistral"], tok)])
    kw = dict(max_new_tokens=10, temperature=1.0, top_k=20)
    assert ens.generate(PROMPTS[:2], seed=1, **kw) == ens.generate(PROMPTS[:2], seed=1, **kw)


def test_alignment_report(models, tok, bpe, bpe_model):
    ens = Ensemble([(models["llama"], tok), (bpe_model, bpe)])
    rep = ens.alignment
    char_row, bpe_row = rep.members
    assert char_row.with_bytes == len(tok) - 4  # every char is a token; the 4 specials have no bytes
    assert char_row.exact[bpe_row.name] == 1.0  # byte-level BPE has every ASCII byte
    assert 0.0 < bpe_row.exact[char_row.name] < 1.0  # multi-char BPE merges are not char tokens
    assert "with bytes" in rep.summary()


def test_shared_only_apis_refuse_byte_alignment(models, tok, bpe, bpe_model):
    ens = Ensemble([(models["llama"], tok), (bpe_model, bpe)])
    with pytest.raises(IncompatibleModelsError, match="share a tokenizer"):
        ens.generate_ids(torch.ones(1, 3, dtype=torch.long))
    with pytest.raises(IncompatibleModelsError, match="share a tokenizer"):
        ens.score(["hello"])
    with pytest.raises(IncompatibleModelsError, match="(?s)differ.*align='bytes'"):
        Ensemble([(models["llama"], tok), (bpe_model, bpe)], align="ids")


def _rollback_case(vmap: VocabMap):
    """A token ``x+y`` whose head ``x`` is a token and whose tail ``y`` is not: committing x then y
    makes the member re-tokenize and roll back x."""
    for data in sorted(vmap.ids, key=len, reverse=True):
        for cut in range(1, len(data)):
            if data[:cut] in vmap.ids and data[cut:] not in vmap.ids and len(data) - cut > 1:
                return data[:cut], data[cut:]
    raise AssertionError("no rollback case in this vocabulary")


def test_track_rolls_back_with_crop_and_matches_a_fresh_forward(bpe, bpe_model):
    member = make_member(bpe_model, bpe, "bpe")
    vmap = VocabMap.of(member)
    head, tail = _rollback_case(vmap)
    batch = TrackBatch(member, vmap, [bpe("Q: 1")["input_ids"]], torch.device("cpu"))
    track = batch.tracks[0]
    batch.sync([0])
    track.advance(head)
    batch.sync([0])
    before = batch.state.length
    track.advance(head + tail)
    logits = batch.sync([0])[0]
    assert b"".join(vmap.token_bytes[i] for i in track.gen) == head + tail
    assert track.gen == bpe((head + tail).decode(), add_special_tokens=False)["input_ids"]
    assert batch.state.length == len(track.want) < before + len(track.gen)  # cropped, not recomputed
    with torch.no_grad():
        fresh = bpe_model(torch.tensor([track.prompt + track.gen])).logits[0, -1]
    torch.testing.assert_close(logits, fresh, atol=1e-4, rtol=1e-4)


def test_track_waits_for_the_rest_of_a_character(models, tok):
    member = make_member(models["llama"], tok, "char")
    track = Track(member, VocabMap.of(member), tok("a")["input_ids"])
    track.advance("é".encode()[:1])  # half a character: nothing to feed yet
    assert track.gen == [] and track.consumed == 0


def test_gated_cross_decoding_reports_fraction(models, tok, bpe, bpe_model):
    lead = without_specials(models["llama"], tok)
    pair = [(lead, tok), (bpe_model, bpe)]
    gated = Ensemble(pair, gate=0.15)
    out = gated.generate(PROMPTS, max_new_tokens=10)
    assert all("\ufffd" not in t for t in out)
    assert 0.0 < gated.stats.ensembled_fraction < 1.0
    never = Ensemble(pair, gate=1e-9)
    alone = Ensemble([(lead, tok)]).generate(PROMPTS, max_new_tokens=10)
    assert never.generate(PROMPTS, max_new_tokens=10) == alone
    assert never.stats.ensembled_fraction == 0.0


def test_sentencepiece_style_member_follows_the_text(spm):
    """``▁`` spaces, byte fallback and an added prefix space: the track still spells exactly the
    committed bytes, and its cache gives the logits of a fresh forward."""
    model = tiny_model("mistral", vocab_size=len(spm), seed=6)
    member = make_member(model, spm, "spm")
    vmap = VocabMap.of(member)
    assert vmap.ids.get(b" ") is not None and vmap.ids.get(b"\xc3") is not None  # ▁ and <0xC3>
    batch = TrackBatch(member, vmap, [spm("Q:")["input_ids"]], torch.device("cpu"))
    track = batch.tracks[0]
    text = b""
    for piece in [b" 1", b"2+", b"7=", b" A", b":", " é".encode()[:2], " é".encode()[2:], b"!"]:
        text += piece
        track.advance(text)
        logits = batch.sync([0])[0]
        assert b"".join(vmap.token_bytes[i] for i in track.gen) == text[: track.consumed]
    assert track.consumed == len(text)
    with torch.no_grad():
        fresh = model(torch.tensor([track.prompt + track.gen])).logits[0, -1]
    torch.testing.assert_close(logits, fresh, atol=1e-4, rtol=1e-4)


def test_sentencepiece_and_byte_level_members_decode_together(models, tok, bpe, bpe_model, spm):
    spm_model = tiny_model("mistral", vocab_size=len(spm), seed=6)
    ens = Ensemble([(spm_model, spm), (bpe_model, bpe), (models["llama"], tok)])
    out = ens.generate(PROMPTS, max_new_tokens=12)
    assert all(isinstance(t, str) and "\ufffd" not in t for t in out)
    assert len(ens.alignment.members) == 3


def test_cross_weight_zero_member_changes_nothing_and_eos_stops(models, tok, bpe, bpe_model):
    lead = without_specials(models["llama"], tok)
    with torch.no_grad():
        lead.lm_head.weight[tok.eos_token_id] *= 3.0  # stops early in some rows
    alone = Ensemble([(lead, tok)])
    expected = alone.generate(PROMPTS, max_new_tokens=20)
    assert alone.stats.row_steps < 20 * len(PROMPTS), "test needs a row that stops on EOS"
    cross = Ensemble([(lead, tok), (bpe_model, bpe)], weights=[1, 0])
    assert cross.generate(PROMPTS, max_new_tokens=20) == expected
    assert cross.stats.row_steps == alone.stats.row_steps  # the same rows stopped at the same steps


def test_cross_stop_strings_and_chat_templates(models, tok, bpe, bpe_model):
    import copy

    pair = [(models["llama"], tok), (bpe_model, bpe)]
    ens = Ensemble(pair)
    full = ens.generate(PROMPTS[:1], max_new_tokens=12)[0]
    marker = full[4:6]
    assert ens.generate(PROMPTS[:1], max_new_tokens=12, stop=[marker])[0] == full[: full.find(marker)]
    chat = []
    for t in (tok, bpe):
        t = copy.deepcopy(t)
        t.chat_template = "{{ bos_token }}{% for m in messages %}Q: {{ m['content'] }}{% endfor %} A:"
        chat.append(t)
    templated = Ensemble([(models["llama"], chat[0]), (bpe_model, chat[1])])
    assert templated.generate(["12+7="], chat=True, max_new_tokens=8) == ens.generate(
        ["Q: 12+7= A:"], max_new_tokens=8
    )


def test_batched_rollback_masks_one_row_and_keeps_the_others(bpe, bpe_model):
    """Row 0 rolls back (its dropped slots are masked out), row 1 only appends, row 2 waits: every
    row's logits equal a fresh forward of its own ids."""
    member = make_member(bpe_model, bpe, "bpe")
    vmap = VocabMap.of(member)
    head, tail = _rollback_case(vmap)
    prompts = [bpe(p)["input_ids"] for p in ("Q: 1", "hello there", "x")]
    batch = TrackBatch(member, vmap, prompts, torch.device("cpu"))
    batch.sync([0, 1, 2])
    other = b""
    for step, committed in enumerate([head, head + tail]):
        other += b"ab"[step : step + 1]
        batch.tracks[0].advance(committed)
        batch.tracks[1].advance(other)
        logits = batch.sync([0, 1])
    for r in (0, 1):
        t = batch.tracks[r]
        assert int(batch.state.mask[r].sum()) == len(t.want)  # only the live ids count
        with torch.no_grad():
            fresh = bpe_model(torch.tensor([t.want])).logits[0, -1]
        torch.testing.assert_close(logits[r], fresh, atol=1e-4, rtol=1e-4)


def test_batched_cross_decoding_equals_one_prompt_at_a_time(models, tok, bpe, bpe_model):
    ens = Ensemble([(models["llama"], tok), (bpe_model, bpe)], combine="logprob")
    batched = ens.generate(PROMPTS, max_new_tokens=12, batch_size=len(PROMPTS))
    assert batched == ens.generate(PROMPTS, max_new_tokens=12, batch_size=1)


def test_member_scores_exact_prefix_eos_and_leftover(models, tok):
    from lmfuse.ensemble.cross import EOS, _member_scores

    member = make_member(models["llama"], tok, "char")
    track = Track(member, VocabMap.of(member), [1])
    lp = torch.randn(len(tok)).log_softmax(-1)
    ids = {ch: tok.convert_tokens_to_ids(ch) for ch in "85 "}
    out = _member_scores(track, lp, [b"8", b"85", b" ", EOS], b"")
    # "85" is no char token: it gets the probability of its longest prefix "8"
    assert out[0] == lp[ids["8"]] and out[1] == lp[ids["8"]] and out[2] == lp[ids[" "]]
    assert out[3] == lp[tok.eos_token_id]
    used = lp[[ids["8"], ids[" "], tok.eos_token_id]].exp().sum()
    assert float(out[4].exp()) == pytest.approx(1 - float(used), abs=1e-6)  # the mass no candidate uses
