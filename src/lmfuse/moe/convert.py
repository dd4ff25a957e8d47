"""Dense → native MoE: the target config and tensor names for Mixtral, Qwen2-MoE and Qwen3-MoE.

Checkpoints are written in the per-expert layout that transformers itself writes and the Hub uses
(``experts.{e}.w1/w2/w3`` for Mixtral, ``experts.{e}.gate_proj/up_proj/down_proj`` for Qwen); transformers
v5 stacks them into 3-D ``gate_up_proj`` / ``down_proj`` parameters when it loads them.
"""

from __future__ import annotations

from typing import Any

from lmfuse.errors import IncompatibleModelsError

DENSE_MLP = ("gate_proj", "up_proj", "down_proj")
MIXTRAL_NAMES = {"gate_proj": "w1", "up_proj": "w3", "down_proj": "w2"}
BLOCK = {"mixtral": "block_sparse_moe", "qwen2_moe": "mlp", "qwen3_moe": "mlp"}
COMMON = (
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
    "hidden_act", "max_position_embeddings", "initializer_range", "rms_norm_eps", "tie_word_embeddings",
    "rope_parameters", "attention_dropout", "bos_token_id", "eos_token_id", "pad_token_id",
)  # fmt: skip
EXTRA = {
    "mixtral": ("head_dim", "sliding_window"),
    "qwen2_moe": ("use_sliding_window", "sliding_window", "max_window_layers", "layer_types"),
    "qwen3_moe": ("head_dim", "attention_bias", "use_sliding_window", "sliding_window", "layer_types"),
}


def dense_mlp_name(layer: int, proj: str) -> str:
    return f"model.layers.{layer}.mlp.{proj}.weight"


def expert_name(arch: str, layer: int, expert: int, proj: str) -> str:
    """Name of expert ``expert``'s ``proj`` (a dense MLP projection name) in the MoE checkpoint."""
    leaf = MIXTRAL_NAMES[proj] if arch == "mixtral" else proj
    return f"model.layers.{layer}.{BLOCK[arch]}.experts.{expert}.{leaf}.weight"


def router_name(arch: str, layer: int) -> str:
    return f"model.layers.{layer}.{BLOCK[arch]}.gate.weight"


def shared_names(layer: int, proj: str) -> str:
    return f"model.layers.{layer}.mlp.shared_expert.{proj}.weight"


def is_dense_mlp(name: str) -> bool:
    return ".mlp." in name and name.rsplit(".", 2)[-2] in DENSE_MLP


def compatibility_problems(arch: str, dense) -> list[str]:
    """Why ``dense`` (a transformers config) cannot become ``arch``; empty when it can."""
    problems = []
    if getattr(dense, "mlp_bias", False):
        problems.append("the dense MLP has biases (mlp_bias: true); MoE experts have none")
    if arch == "mixtral" and getattr(dense, "attention_bias", False):
        problems.append("Mixtral has no attention biases but the dense model has attention_bias: true")
    if getattr(dense, "hidden_act", "silu") != "silu":
        problems.append(f"experts must use silu (SwiGLU), found hidden_act {dense.hidden_act!r}")
    return problems


def moe_config(arch: str, dense, num_experts: int, k: int, shared_width: int = 0) -> Any:
    """The transformers config of the MoE built from ``dense``'s config with ``num_experts`` experts."""
    from transformers import MixtralConfig, Qwen2MoeConfig, Qwen3MoeConfig

    problems = compatibility_problems(arch, dense)
    if problems:
        raise IncompatibleModelsError(f"cannot build {arch} from {dense.model_type}: " + "; ".join(problems))
    fields = {f: getattr(dense, f) for f in COMMON + EXTRA[arch] if hasattr(dense, f)}
    fields["num_experts_per_tok"] = k
    width = dense.intermediate_size
    if arch == "mixtral":
        cfg = MixtralConfig(**fields, intermediate_size=width, num_local_experts=num_experts)
    elif arch == "qwen2_moe":
        cfg = Qwen2MoeConfig(
            **fields, intermediate_size=width, moe_intermediate_size=width, num_experts=num_experts,
            shared_expert_intermediate_size=shared_width, norm_topk_prob=True, decoder_sparse_step=1,
            mlp_only_layers=[], qkv_bias=True,
        )  # fmt: skip
    else:
        cfg = Qwen3MoeConfig(
            **fields, intermediate_size=width, moe_intermediate_size=width, num_experts=num_experts,
            norm_topk_prob=True, decoder_sparse_step=1, mlp_only_layers=[],
        )  # fmt: skip
    cfg.architectures = [type(cfg).__name__.replace("Config", "ForCausalLM")]
    return cfg
