"""Input-embedding and ``lm_head`` names by naming convention, so planning needs no transformers.

Building a meta model through ``AutoModelForCausalLM.from_config`` only to ask which parameter is the
input embedding costs seconds (importing transformers' modelling code). The decoder families below all
name them ``model.embed_tokens.weight`` and ``lm_head.weight``; a checkpoint of one of these types that
has that embedding tensor is planned from its names and headers alone. Any other model type (or a
checkpoint that does not follow the convention) is asked of transformers on the meta device, as before.
"""

from __future__ import annotations

from collections.abc import Collection

CONVENTIONAL_TYPES = frozenset(
    {"llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "gemma", "gemma2", "phi3"}
)
EMBED = "model.embed_tokens.weight"
HEAD = "lm_head.weight"


def conventional_layout(model_type: str, tensor_names: Collection[str]) -> tuple[list[str], str] | None:
    """``([input-embedding names], lm_head name)`` when the convention applies, else None."""
    if model_type in CONVENTIONAL_TYPES and EMBED in tensor_names:
        return [EMBED], HEAD
    return None
