"""Members: loading, EOS sets, validation of the ensemble's arguments."""

from __future__ import annotations

import pytest

from lmfuse.ensemble import Ensemble
from lmfuse.ensemble.member import eos_ids_of, load_member, make_member
from lmfuse.errors import ConfigError, IncompatibleModelsError, ModelNotFoundError
from lmfuse.testing import char_tokenizer, save_tiny, tiny_model


def test_eos_ids_join_generation_config_model_config_and_tokenizer(tok):
    model = tiny_model("llama", vocab_size=len(tok), seed=1)
    model.generation_config.eos_token_id = [2, 7]
    assert eos_ids_of(model, tok) == {2, 7}


def test_head_smaller_than_tokenizer_is_refused(tok):
    model = tiny_model("llama", vocab_size=len(tok) - 5, seed=1)
    with pytest.raises(IncompatibleModelsError, match="output head has"):
        make_member(model, tok, "small")


def test_load_member_from_a_directory(tmp_path):
    save_tiny(tmp_path / "m", "qwen2", char_tokenizer(), seed=2)
    m = load_member(str(tmp_path / "m"), dtype="float32")
    assert m.vocab_size == len(m.tokenizer) and m.eos_ids == {2}
    with pytest.raises(ModelNotFoundError):
        load_member(str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="expected a model path"):
        load_member(42)


def test_ensemble_arguments_are_validated_together(models, tok):
    with pytest.raises(ConfigError) as err:
        Ensemble([(models["llama"], tok)], combine="mean", align="tokens", gate=2.0, union_top_k=-1)
    assert len(err.value.problems) == 4
    ens = Ensemble([(models["llama"], tok)])
    with pytest.raises(ConfigError) as err:
        ens.generate(["x"], max_new_tokens=0, temperature=-1, top_p=0.0, top_k=-2)
    assert len(err.value.problems) == 4


def test_different_vocabularies_fall_back_to_byte_alignment(models, tok):
    other = char_tokenizer(chars="0123456789")
    digits = tiny_model("llama", vocab_size=len(tok), seed=3)  # head padded past its 14-token vocabulary
    ens = Ensemble([(models["llama"], tok), (digits, other)])
    assert not ens.shared_vocab and ens.vocab_sizes == [len(tok), len(other)]
    # weight 1 on the digits-only member: only digits (or nothing) can be committed
    digits_only = Ensemble([(models["llama"], tok), (digits, other)], weights=[0, 1], combine="logprob")
    assert set("".join(digits_only.generate(["1+1=", "hello"], max_new_tokens=6))) <= set("0123456789")


def test_chat_template_is_applied_per_member(models, tok):
    import copy

    chat_tok = copy.deepcopy(tok)
    chat_tok.chat_template = "{{ bos_token }}{% for m in messages %}Q: {{ m['content'] }}{% endfor %} A:"
    ens = Ensemble([(models["llama"], chat_tok)])
    assert ens.generate(["12+7="], chat=True, max_new_tokens=6) == ens.generate(
        ["Q: 12+7= A:"], max_new_tokens=6
    )
    with pytest.raises(ConfigError, match="no chat template"):
        Ensemble([(models["llama"], tok)]).generate(["x"], chat=True)


def test_empty_prompt_without_bos_is_a_clear_error(models, tok, bpe):
    import copy

    no_bos = copy.deepcopy(bpe)
    no_bos._tokenizer.post_processor = None
    model = tiny_model("llama", vocab_size=len(bpe), seed=9)
    with pytest.raises(ConfigError, match="sees no token"):
        Ensemble([(model, no_bos)]).generate(["ok", ""])
    with pytest.raises(ConfigError, match="sees no token"):
        Ensemble([(models["llama"], tok), (model, no_bos)]).generate([""])


def test_forward_rows_then_catch_up_matches_full_batch_decoding(models, tok):
    import torch

    from lmfuse.ensemble.member import MemberState

    member = make_member(models["qwen2"], tok, "q")
    enc = tok(["Q: 1+2=", "hello", "a"], return_tensors="pt", padding=True)
    ref, state = MemberState(member, 3), MemberState(member, 3)
    ref.forward(enc["input_ids"], enc["attention_mask"])
    state.forward(enc["input_ids"], enc["attention_mask"])
    step = torch.tensor([[5], [6], [7]])
    expected = ref.forward(step)
    sub = state.forward_rows(torch.tensor([0, 2]), step, torch.ones_like(step))
    torch.testing.assert_close(sub, expected[[0, 2]], atol=1e-5, rtol=1e-5)
    # row 1 reads its skipped token later in the same chunk as everyone's next token
    chunk = torch.tensor([[0, 9], [6, 9], [0, 9]])
    chunk_mask = torch.tensor([[0, 1], [1, 1], [0, 1]])
    torch.testing.assert_close(
        state.forward(chunk, chunk_mask), ref.forward(torch.tensor([[9], [9], [9]])), atol=1e-5, rtol=1e-5
    )
