"""Open a source model for grafting without loading it: its config, its tensors by layer, its layout.

Decoder layers are recognised by their tensor names, ``<prefix>layers.<i>.<rest>`` (``model.layers.3.
self_attn.q_proj.weight``); the input embeddings by naming convention for the common decoder families
(``layout.py``), else by asking transformers (on the meta device, no memory) which parameter it is. A model whose tensors do not follow that
layout is refused with a message, never grafted into garbage.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmfuse.core.checkpoint import CheckpointReader
from lmfuse.core.loading import resolve_model_path
from lmfuse.errors import LmfuseError, ModelNotFoundError
from lmfuse.graft.layout import conventional_layout

LAYER_NAME = re.compile(r"^(?P<prefix>(?:.+\.)?layers)\.(?P<idx>\d+)\.(?P<rest>.+)$")


@dataclass
class SourceModel:
    """One model named in a recipe, opened lazily."""

    name: str
    """As written in the recipe."""
    directory: Path
    config: dict[str, Any]
    reader: CheckpointReader
    prefix: str
    """Layer prefix, e.g. ``model.layers``."""
    layers: dict[int, dict[str, str]]
    """Layer index → {name after the index → full tensor name}."""
    embed_names: list[str] = field(default_factory=list)
    """Non-layer tensors that are the input embeddings (from the embeddings model)."""
    other_names: list[str] = field(default_factory=list)
    """Every other non-layer tensor: final norm, ``lm_head``... (from the head model)."""
    head_name: str | None = None
    """The ``lm_head`` parameter's name when known from the naming convention (``layout.py``)."""

    @property
    def num_layers(self) -> int:
        return int(self.config.get("num_hidden_layers", len(self.layers)))

    @property
    def tied(self) -> bool:
        return bool(self.config.get("tie_word_embeddings", False))

    @property
    def model_type(self) -> str:
        return str(self.config.get("model_type", "?"))


def resolve_directory(name: str) -> Path:
    """A recipe's model string → a local directory (``zoo:NAME``, a path, or a cached hub id)."""
    text = resolve_model_path(name)
    path = Path(text).expanduser()
    if path.is_dir():
        return path
    if text.count("/") == 1 and not text.startswith((".", "/", "~")):
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(text, local_files_only=True))
        except Exception:  # noqa: BLE001 - any failure means "not available offline"
            raise ModelNotFoundError(
                f"model {name!r}: not a local directory and not in the Hugging Face cache; "
                f"download it first (`huggingface-cli download {text}`) or pass a local path"
            ) from None
    raise ModelNotFoundError(f"model {name!r}: directory not found; expected a model directory or zoo:NAME")


def input_embedding_names(config: dict[str, Any]) -> list[str]:
    """Names of the input-embedding parameters of the model this config builds (meta device)."""
    model = meta_model(config)
    weight = model.get_input_embeddings().weight
    # Deduplicated names: a tied lm_head shares this weight but is registered after the embeddings.
    return [n for n, p in model.named_parameters() if p is weight]


def meta_model(config: dict[str, Any]):
    """The causal LM ``config`` describes, built on the meta device (no memory, no init)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    data = {k: v for k, v in config.items() if k != "model_type"}
    cfg = AutoConfig.for_model(config["model_type"], **data)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(cfg)


def open_source(name: str) -> SourceModel:
    """Open ``name``; raises ``LmfuseError`` with one clear sentence when it cannot be grafted."""
    directory = resolve_directory(name)
    cfg_path = directory / "config.json"
    if not cfg_path.is_file():
        raise LmfuseError(f"model {name!r}: no config.json in {directory}")
    try:
        config = json.loads(cfg_path.read_text())
    except ValueError as exc:
        raise LmfuseError(f"model {name!r}: config.json is not valid JSON ({exc})") from None
    if "model_type" not in config:
        raise LmfuseError(f"model {name!r}: config.json has no model_type")
    reader = CheckpointReader(directory)
    prefixes: set[str] = set()
    layers: dict[int, dict[str, str]] = {}
    rest: list[str] = []
    names = reader.keys()
    for tensor in names:
        m = LAYER_NAME.match(tensor)
        if m:
            prefixes.add(m["prefix"])
            layers.setdefault(int(m["idx"]), {})[m["rest"]] = tensor
        else:
            rest.append(tensor)
    n = config.get("num_hidden_layers")
    if (
        len(prefixes) != 1
        or sorted(layers) != list(range(len(layers)))
        or (n is not None and len(layers) != n)
    ):
        raise LmfuseError(
            f"model {name!r}: unknown layer layout; expected tensors named '<prefix>layers.<i>.<...>' "
            f"for i = 0..{(n or 1) - 1} under one prefix, found prefixes {sorted(prefixes) or 'none'} and "
            f"layer indices {sorted(layers)[:8]}{'...' if len(layers) > 8 else ''}"
        )
    layout = conventional_layout(str(config["model_type"]), set(names))
    try:
        embed = set(layout[0] if layout else input_embedding_names(config))
    except Exception as exc:  # noqa: BLE001 - transformers raises many types for unknown configs
        raise LmfuseError(
            f"model {name!r}: transformers cannot build model_type {config['model_type']!r} "
            f"({type(exc).__name__}: {exc})"
        ) from None
    embed_names = [t for t in rest if t in embed]
    if not embed_names:
        raise LmfuseError(f"model {name!r}: no input-embedding tensor (expected one of {sorted(embed)})")
    other = [t for t in rest if t not in embed]
    head_name = layout[1] if layout else None
    return SourceModel(name, directory, config, reader, prefixes.pop(), layers, embed_names, other, head_name)


def layer_signature(src: SourceModel, layer: int) -> dict[str, tuple[tuple[int, ...], str]]:
    """``{name after the index: (shape, dtype)}`` of one layer, from file headers only."""
    out = {}
    for rest, tensor in src.layers[layer].items():
        shape, dtype = src.reader.meta(tensor)
        out[rest] = (tuple(shape), str(dtype).removeprefix("torch."))
    return out
