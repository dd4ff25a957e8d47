"""Tiny models shared by the ensemble tests (built once per session, milliseconds per forward)."""

from __future__ import annotations

import pytest

from lmfuse.testing import bpe_tokenizer, char_tokenizer, tiny_model

PROMPTS = ["Q: 12+7= A:", "hi", "the quick brown fox jumps", "Q: 6*8="]
"""Different lengths, so batches are left-padded."""


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread; on a shared 2-core machine more threads only contend."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tok():
    return char_tokenizer()


@pytest.fixture(scope="session")
def bpe():
    return bpe_tokenizer(vocab_size=300)


@pytest.fixture(scope="session")
def models(tok):
    """Three members of different architectures sharing the char tokenizer."""
    return {
        arch: tiny_model(arch, vocab_size=len(tok), seed=seed)
        for seed, arch in enumerate(("llama", "mistral", "qwen2"), start=1)
    }


@pytest.fixture()
def batch(tok):
    enc = tok(PROMPTS, return_tensors="pt", padding=True)
    return enc["input_ids"], enc["attention_mask"]


def without_specials(model, tok):
    """A copy of ``model`` that never predicts pad/bos/unk (as a trained model would not): its head gets
    a bias of -1e4 on those rows. Byte alignment has no candidate for tokens without bytes."""
    import copy

    import torch

    out = copy.deepcopy(model)
    head = out.lm_head
    biased = torch.nn.Linear(head.in_features, head.out_features, bias=True)
    with torch.no_grad():
        biased.weight.copy_(head.weight)
        biased.bias.zero_()
        biased.bias[[tok.pad_token_id, tok.bos_token_id, tok.unk_token_id]] = -1e4
    out.lm_head = biased
    return out


@pytest.fixture(scope="session")
def spm():
    """A SentencePiece-style tokenizer (``▁`` for spaces, ``<0xNN>`` byte fallback, prefix space on the
    first word), as Llama-2 and Mistral use: its tokens' strings are not their bytes."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE(unk_token=None, byte_fallback=True))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    backend.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    specials = ["<pad>", "<bos>", "<eos>", "<unk>"] + [f"<0x{i:02X}>" for i in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials, show_progress=False)
    backend.train_from_iterator(
        ["hello world, the quick brown fox.", "Q: 12+7= A: 19", "Q: 6*8= A: 48"], trainer
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )
