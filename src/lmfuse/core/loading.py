"""Load causal LMs and tokenizers from a local directory, a zoo name (``zoo:NAME``) or a hub id.

Offline-safe: a path that does not exist and an id that is not in the local hub cache give one
``ModelNotFoundError`` naming what was asked and what to do, never a network stack trace.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError

from lmfuse.errors import CheckpointError, ConfigError, ModelNotFoundError

DTYPES = {
    "float32": torch.float32, "fp32": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16,
    "float64": torch.float64,
}  # fmt: skip


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | str:
    """``"bfloat16"``/``"bf16"``/``torch.bfloat16`` → ``torch.bfloat16``; ``None``/``"auto"`` → ``"auto"``."""
    if dtype is None or dtype == "auto":
        return "auto"
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ConfigError(f"dtype: expected one of auto, {', '.join(DTYPES)}, found {dtype!r}")
    return DTYPES[dtype]


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/``"auto"`` → first CUDA device if any, else CPU; a device this machine lacks is a
    ``ConfigError`` (not a CUDA traceback later)."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device: expected cpu, cuda, cuda:N, mps or auto, found {device!r}") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (dev.index or 0) >= count:
            raise ConfigError(f"device {device!r}: this machine has {count} CUDA device(s); use cpu or auto")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device {device!r}: MPS is not available on this machine; use cpu or auto")
    return dev


def resolve_model_path(name_or_path: str | os.PathLike) -> str:
    """Map ``zoo:NAME`` to the committed zoo directory; return local paths and hub ids unchanged."""
    text = str(name_or_path)
    if text.startswith("zoo:"):
        from lmfuse import zoo  # lazy: zoo is data shipped with the package, not a method

        return str(zoo.path(text[4:]))
    return text


def _is_local(text: str) -> bool:
    """A path, not a hub id (``gpt2``, ``org/name``): absolute, ``./``/``~``, existing, or deeper than
    ``org/name``."""
    return os.path.isabs(text) or text.startswith((".", "~")) or Path(text).exists() or text.count("/") > 1


TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "tokenizer_config.json")


def has_tokenizer(directory: str | os.PathLike) -> bool:
    """Whether a model directory holds tokenizer files (any of ``TOKENIZER_FILES`` or a ``*.model``)."""
    d = Path(directory)
    return any((d / f).is_file() for f in TOKENIZER_FILES) or any(d.glob("*.model"))


def _check_json(directory: Path, name: str) -> None:
    """A malformed JSON file in a model directory is named as such, not reported as a missing model."""
    import json

    f = directory / name
    if f.is_file():
        try:
            json.loads(f.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise CheckpointError(
                f"{f}: not valid JSON ({exc}); repair or re-create the model directory"
            ) from None


def _not_found(text: str, exc: Exception) -> ModelNotFoundError:
    if _is_local(text):
        return ModelNotFoundError(
            f"model not found at {text!r}: expected a directory with config.json and weights "
            f"(or 'zoo:NAME'; see `lmfuse zoo list`)"
        )
    return ModelNotFoundError(
        f"model {text!r} is not a local directory and could not be loaded from the Hugging Face cache "
        f"({type(exc).__name__}). Download it first where a network is available "
        f"(`hf download {text}`) or pass a local path."
    )


def load_tokenizer(name_or_path: str | os.PathLike, **kwargs: Any):
    """Load a tokenizer with ``AutoTokenizer``; raises ``ModelNotFoundError`` if it cannot be found."""
    from transformers import AutoTokenizer

    text = resolve_model_path(name_or_path)
    local = _is_local(text)
    if local and not Path(text).expanduser().is_dir():
        raise _not_found(text, FileNotFoundError(text))
    where = str(Path(text).expanduser()) if local else text
    if local:
        _check_json(Path(where), "tokenizer_config.json")
        _check_json(Path(where), "tokenizer.json")
        if not has_tokenizer(where):
            raise CheckpointError(
                f"no tokenizer in {text!r}: expected one of {', '.join(TOKENIZER_FILES)}; copy the tokenizer "
                "files of the model it was made from into it"
            )
    try:
        if local and _plain_tokenizers_backend(Path(where)):
            # transformers 5 maps some model types (e.g. qwen2) to their own tokenizer class even when
            # tokenizer_config.json asks for the generic backend, and rebuilds the pre-tokenizer.
            from transformers import PreTrainedTokenizerFast

            return PreTrainedTokenizerFast.from_pretrained(where, **kwargs)
        return AutoTokenizer.from_pretrained(where, **kwargs)
    except (OSError, ValueError) as exc:
        raise _not_found(text, exc) from None


def _plain_tokenizers_backend(directory: Path) -> bool:
    import json

    cfg = directory / "tokenizer_config.json"
    if not cfg.is_file() or not (directory / "tokenizer.json").is_file():
        return False
    try:
        cls = json.loads(cfg.read_text()).get("tokenizer_class")
    except ValueError:
        return False
    return cls in ("TokenizersBackend", "PreTrainedTokenizerFast")


def quiet_transformers() -> None:
    """No "Loading weights" progress bars or advisory warnings from transformers from here on (the
    commands that load models call this before they do)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


COMPANION_FILES = {
    "prompt_router.json": (
        "a prompt-routed MoE (one routing decision per prompt, lmfuse.moe.prompt): transformers alone "
        "would load it with its token-level gates, which is another model. Load it with "
        "lmfuse.moe.PromptRoutedMoE.from_pretrained or lmfuse.moe.prompt.load_model_and_tokenizer, or "
        "use it as an `hf` backend (exchange, vote, `lmfuse serve` single/vote/moa/eot); the token-level "
        "ensemble steps the model itself and cannot route by prompt"
    ),
}
"""Files that lmfuse methods write beside a transformers checkpoint and that change what the model is:
file name → what such a directory holds and how to load it. ``load_model`` refuses these directories
(``plain=True``: a loader that wraps the bare transformers model itself)."""


def _refuse_companions(directory: Path) -> None:
    for name, what in COMPANION_FILES.items():
        if (directory / name).is_file():
            raise CheckpointError(f"{directory} has {name}: {what}")


def load_model(
    name_or_path: str | os.PathLike,
    dtype: str | torch.dtype | None = "auto",
    device: str | torch.device | None = "cpu",
    plain: bool = False,
    **kwargs: Any,
):
    """Load a causal LM in eval mode on ``device`` (``"auto"``: CUDA if present). A directory with one
    of ``COMPANION_FILES`` is refused unless ``plain`` (the bare transformers model, on purpose)."""
    from transformers import AutoModelForCausalLM

    text = resolve_model_path(name_or_path)
    if _is_local(text) and not (Path(text).expanduser() / "config.json").is_file():
        raise _not_found(text, FileNotFoundError(text))
    if _is_local(text):
        _check_json(Path(text).expanduser(), "config.json")
        if not plain:
            _refuse_companions(Path(text).expanduser())
    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(Path(text).expanduser()) if _is_local(text) else text, dtype=resolve_dtype(dtype), **kwargs
        )
    except OSError as exc:
        raise _not_found(text, exc) from None
    except SafetensorError as exc:
        from lmfuse.core.checkpoint import corrupt_weights

        raise CheckpointError(corrupt_weights(text, exc)) from None
    return model.to(resolve_device(device)).eval()


def load_model_and_tokenizer(
    name_or_path: str | os.PathLike, dtype: str | torch.dtype | None = "auto", device: str | None = "cpu"
):
    """Both at once: ``(model, tokenizer)``."""
    return load_model(name_or_path, dtype=dtype, device=device), load_tokenizer(name_or_path)
