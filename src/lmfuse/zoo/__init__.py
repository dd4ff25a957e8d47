"""The zoo: tiny models trained here on synthetic arithmetic with scratchpad answers (see zoo/README.md).

``base`` (Llama, character tokenizer) is trained on all three operations; ``add``, ``sub`` and ``mul`` are
specialists, MLP-only fine-tunes of it (same tokenizer, attention and embeddings); ``generalist`` is a
Qwen3 trained from scratch with its own byte-level BPE tokenizer. All of them read peers' solutions shown
before a question (``lmfuse.zoo.training_data``).
"""

from __future__ import annotations

from pathlib import Path

from lmfuse.errors import ModelNotFoundError
from lmfuse.zoo.evaluate import MAX_NEW_TOKENS, EvalResult, evaluate, extract_number, hf_generate_fn, score
from lmfuse.zoo.questions import OPS, Question, eval_set, sample_question, validation_set

ROOT = Path(__file__).parent / "models"
MEMBERS = ("base", "add", "sub", "mul", "generalist")
"""Every zoo model, in display order."""
SPECIALISTS = ("add", "sub", "mul")
"""Fine-tunes of ``base`` that share its tokenizer."""


def names() -> list[str]:
    """Zoo models present on disk, in display order."""
    return [n for n in MEMBERS if (ROOT / n / "config.json").is_file()]


def path(name: str) -> Path:
    """Directory of zoo model ``name`` (loadable with ``from_pretrained``)."""
    d = ROOT / name
    if not (d / "config.json").is_file():
        have = ", ".join(names()) or "none"
        raise ModelNotFoundError(f"no zoo model {name!r}; available: {have}")
    return d


def load(name: str, dtype: str = "float32"):
    """``(model, tokenizer)`` of zoo model ``name``, on CPU, in eval mode."""
    from lmfuse.core.loading import load_model_and_tokenizer

    return load_model_and_tokenizer(path(name), dtype=dtype, device="cpu")


__all__ = [
    "MAX_NEW_TOKENS", "MEMBERS", "OPS", "SPECIALISTS", "EvalResult", "Question", "eval_set", "evaluate", "extract_number",
    "hf_generate_fn", "load", "names", "path", "sample_question", "score", "validation_set",
]  # fmt: skip
