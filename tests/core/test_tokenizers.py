from lmfuse import testing
from lmfuse.core.tokenizers import compare_tokenizers, token_bytes


def test_same_tokenizer_is_compatible():
    a, b = testing.char_tokenizer(), testing.char_tokenizer()
    report = compare_tokenizers(a, b, "a", "b")
    assert report.compatible and report.same_vocab
    assert "identical" in report.summary()


def test_different_tokenizers_report_sizes_and_overlap():
    char, bpe = testing.char_tokenizer(), testing.bpe_tokenizer()
    report = compare_tokenizers(char, bpe, "char", "bpe")
    assert not report.compatible and not report.same_vocab
    assert report.size_a == len(char.get_vocab()) and report.size_b == len(bpe.get_vocab())
    assert f"{report.size_a:,} vs {report.size_b:,} tokens" in report.summary()


def test_special_token_differences_are_listed():
    a = testing.char_tokenizer()
    b = testing.char_tokenizer()
    b.eos_token = "<unk>"
    report = compare_tokenizers(a, b)
    assert report.same_vocab and not report.compatible
    assert any(d.startswith("eos:") for d in report.special_diffs)


def _decode_via_bytes(tok, text):
    table = token_bytes(tok)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    return b"".join(table[i] for i in ids).decode("utf-8")


def test_token_bytes_reconstruct_text_for_char_and_byte_level_bpe():
    text = "Q: 12+7= A: 19, the answer is 42.\nhello"
    for tok in (testing.char_tokenizer(), testing.bpe_tokenizer()):
        assert _decode_via_bytes(tok, text) == text
        table = token_bytes(tok)
        assert all(table[i] is None for i in tok.all_special_ids)


def test_token_bytes_handles_sentencepiece_style_metaspace_and_byte_fallback():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {"<unk>": 0, "▁hi": 1, "▁there": 2, "<0x0A>": 3, "!": 4}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>", byte_fallback=True))
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>")
    table = token_bytes(tok)
    assert table[1] == b" hi" and table[2] == b" there" and table[3] == b"\n" and table[4] == b"!"
    assert table[0] is None
