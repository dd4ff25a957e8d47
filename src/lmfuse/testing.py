"""Tiny random models and in-process tokenizers for tests, examples and the zoo's training script.

Nothing here touches the network. Sizes follow transformers' own test configs (vocab ~100, hidden 32,
2 layers) so a forward pass takes milliseconds on a CPU.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

import torch

SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]
DEFAULT_CHARS = string.digits + string.ascii_letters + " +-*/=?:.,!'\n"
DEFAULT_CORPUS = [
    "Q: 12+7= A: 19",
    "Q: 40-13= A: 27",
    "Q: 6*8= A: 48",
    "the quick brown fox jumps over the lazy dog",
    "hello world, this is a tiny corpus for a tiny tokenizer.",
    "What is the answer? The answer is 42.",
]


def _wrap(backend, model_max_length: int = 512):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=model_max_length,
        padding_side="left",
    )


def _bos_template():
    from tokenizers import processors

    return processors.TemplateProcessing(single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", 1)])


def char_tokenizer(chars: str = DEFAULT_CHARS):
    """A character-level tokenizer: ids 0-3 are ``<pad> <bos> <eos> <unk>``, then one id per char.

    It prepends ``<bos>`` and pads on the left (ready for batched generation).
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    for ch in dict.fromkeys(chars):
        vocab.setdefault(ch, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    backend.post_processor = _bos_template()
    return _wrap(backend)


def bpe_tokenizer(corpus: list[str] | None = None, vocab_size: int = 300):
    """A byte-level BPE tokenizer trained in-process on ``corpus`` (deterministic).

    Its ids differ from ``char_tokenizer``'s, which is what cross-vocabulary tests need.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    backend = Tokenizer(models.BPE(unk_token=None))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(corpus or DEFAULT_CORPUS, trainer=trainer)
    backend.post_processor = _bos_template()
    return _wrap(backend)


ARCHITECTURES = ("llama", "mistral", "qwen2", "qwen3")


def tiny_config(arch: str = "llama", vocab_size: int = 100, **overrides: Any):
    """A tiny config of ``arch`` (hidden 32, 2 layers, 4 heads, 2 KV heads); ``overrides`` win."""
    from transformers import LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config

    classes = {"llama": LlamaConfig, "mistral": MistralConfig, "qwen2": Qwen2Config, "qwen3": Qwen3Config}
    if arch not in classes:
        raise ValueError(f"arch must be one of {', '.join(classes)}, found {arch!r}")
    fields: dict[str, Any] = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=False,
    )
    if arch == "mistral":
        fields["sliding_window"] = None
    if arch == "qwen3":
        fields["head_dim"] = 8  # Qwen3Config defaults to 128 whatever the hidden size
    fields.update(overrides)
    return classes[arch](**fields)


def tiny_model(arch: str = "llama", vocab_size: int = 100, seed: int = 0, **overrides: Any):
    """A randomly initialised tiny causal LM in eval mode, reproducible from ``seed``."""
    return model_from_config(tiny_config(arch, vocab_size=vocab_size, **overrides), seed=seed)


def model_from_config(config, seed: int = 0):
    """A random causal LM of any ``config`` in eval mode, reproducible from ``seed``."""
    from transformers import AutoModelForCausalLM

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
        # Default init is nearly uniform; a wider spread makes greedy outputs depend on the weights.
        for p in model.parameters():
            if p.dim() > 1:
                torch.nn.init.normal_(p, std=0.2)
    return model.eval()


def save_tiny(
    directory: str | Path, arch: str = "llama", tokenizer=None, seed: int = 0, **overrides: Any
) -> Path:
    """Build a tiny model sized to ``tokenizer`` (char-level by default) and save both to ``directory``."""
    tokenizer = tokenizer if tokenizer is not None else char_tokenizer()
    model = tiny_model(arch, vocab_size=len(tokenizer), seed=seed, **overrides)
    directory = Path(directory)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
