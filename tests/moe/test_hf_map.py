"""transformers 5 MoE blocks (Mixtral, Qwen2-MoE, Qwen3-MoE, DeepSeek-V3) → ``MoE`` and back: equal outputs."""

import pytest
import torch

from lmfuse.moe.hf_map import block_kind, from_hf, to_hf

M, WIDTH, E = 16, 8, 8


def hf_block(kind: str, seed: int = 0, **extra):
    torch.manual_seed(seed)
    if kind == "mixtral":
        from transformers import MixtralConfig
        from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock as cls

        cfg = MixtralConfig(
            hidden_size=M, intermediate_size=WIDTH, num_local_experts=E, num_experts_per_tok=2
        )
    elif kind == "qwen2_moe":
        from transformers import Qwen2MoeConfig
        from transformers.models.qwen2_moe.modeling_qwen2_moe import Qwen2MoeSparseMoeBlock as cls

        cfg = Qwen2MoeConfig(hidden_size=M, moe_intermediate_size=WIDTH, shared_expert_intermediate_size=12,
                             num_experts=E, num_experts_per_tok=3, **extra)  # fmt: skip
    elif kind == "qwen3_moe":
        from transformers import Qwen3MoeConfig
        from transformers.models.qwen3_moe.modeling_qwen3_moe import Qwen3MoeSparseMoeBlock as cls

        cfg = Qwen3MoeConfig(hidden_size=M, moe_intermediate_size=WIDTH, num_experts=E, num_experts_per_tok=2,
                             norm_topk_prob=True, **extra)  # fmt: skip
    else:
        from transformers import DeepseekV3Config
        from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3MoE as cls

        cfg = DeepseekV3Config(hidden_size=M, moe_intermediate_size=WIDTH, n_routed_experts=E, num_experts_per_tok=2,
                               n_group=4, topk_group=2, n_shared_experts=2, routed_scaling_factor=2.5)  # fmt: skip
    block = cls(cfg)
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(0, 0.3)
        if kind == "deepseek_v3":
            block.gate.e_score_correction_bias.normal_(0, 0.1)
    return block.eval()


CASES = [
    ("mixtral", {}),
    ("qwen2_moe", {}),
    ("qwen2_moe", dict(norm_topk_prob=True)),
    ("qwen3_moe", {}),
    ("deepseek_v3", {}),
]


@pytest.mark.parametrize("kind,extra", CASES)
def test_from_hf_equals_the_transformers_block(kind, extra):
    block = hf_block(kind, **extra)
    assert block_kind(block) == kind
    moe = from_hf(block).eval()
    x = torch.randn(2, 9, M)
    with torch.no_grad():
        ref = block(x)
        y, _ = moe(x)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-6)
    assert (moe.shared is not None) == (kind in ("qwen2_moe", "deepseek_v3"))
    if kind == "qwen2_moe":
        assert moe.shared.gate is not None  # the sigmoid-gated shared expert is part of the layer


@pytest.mark.parametrize("kind,extra", CASES)
def test_to_hf_writes_every_weight_back(kind, extra):
    moe = from_hf(hf_block(kind, **extra))
    with torch.no_grad():
        for p in moe.parameters():
            p.add_(torch.randn_like(p) * 0.1)  # a trained MoE differs from what was loaded
        if kind == "deepseek_v3":  # softmax routers have no selection bias
            moe.expert_bias.add_(torch.randn_like(moe.expert_bias) * 0.05)
    other = to_hf(moe, hf_block(kind, seed=1, **extra))
    x = torch.randn(3, 4, M)
    with torch.no_grad():
        torch.testing.assert_close(moe.eval()(x)[0], other(x), rtol=1e-5, atol=1e-6)
    again = from_hf(other)
    for (name, a), b in zip(moe.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_to_hf_rejects_a_block_of_another_shape():
    moe = from_hf(hf_block("mixtral"))
    with pytest.raises(ValueError, match="num_experts_per_tok = 3"):
        to_hf(moe, hf_block("qwen2_moe"))
