"""MoE checkpoints from dense models: identity invariant, native loading, generation, validation."""

import json

import pytest
import torch

from lmfuse.core.loading import load_model
from lmfuse.errors import CheckpointError, ConfigError, IncompatibleModelsError
from lmfuse.moe.build import build_moe
from lmfuse.moe.recipe import BuildRecipe, ExpertSpec, SharedExpertSpec

PROMPTS = [["Q: 12+7= A:", "Q: 3+4= A:"], ["Q: 6*8= A:", "Q: 2*9= A:"], ["Q: 40-13= A:"]]


def recipe(base, experts, **kw) -> BuildRecipe:
    specs = [ExpertSpec(str(e), PROMPTS[i % 3]) for i, e in enumerate(experts)]
    return BuildRecipe(base=str(base), experts=specs, **kw)


def logits(path, ids):
    with torch.no_grad():
        return load_model(path, dtype=torch.float32)(ids).logits


@pytest.mark.parametrize(
    "arch,init,k",
    [("llama", "hidden", 2), ("mistral", "embed", 1), ("qwen2", "random", 2), ("qwen3", "hidden", 3)],
)
def test_identical_copies_reproduce_the_dense_model_whatever_the_router(tmp_path, arch, init, k, make_dense):
    dense = make_dense(tmp_path / "dense", arch)
    result = build_moe(recipe(dense, [dense] * 3, router_init=init, num_experts_per_tok=k), tmp_path / "moe")
    expected = {"llama": "mixtral", "mistral": "mixtral", "qwen2": "qwen2_moe", "qwen3": "qwen3_moe"}[arch]
    assert result.architecture == expected
    assert json.loads((tmp_path / "moe" / "config.json").read_text())["model_type"] == expected
    ids = torch.randint(4, 60, (2, 11), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(logits(tmp_path / "moe", ids), logits(dense, ids), rtol=1e-4, atol=1e-4)
    model = load_model(tmp_path / "moe", dtype=torch.float32)
    kw = dict(max_new_tokens=8, do_sample=False, pad_token_id=0, eos_token_id=None)
    assert torch.equal(model.generate(ids, use_cache=True, **kw), model.generate(ids, use_cache=False, **kw))


def test_built_moe_loads_natively_and_generates_same_with_and_without_cache(tmp_path, llama_family):
    from transformers import AutoModelForCausalLM

    base, fts = llama_family
    build_moe(recipe(base, fts), tmp_path / "moe")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "moe").eval()
    assert type(model).__name__ == "MixtralForCausalLM"
    ids = torch.tensor([[1, 20, 21, 22, 23]])
    kw = dict(max_new_tokens=12, do_sample=False, pad_token_id=0, eos_token_id=None)
    with_cache = model.generate(ids, use_cache=True, **kw)
    without = model.generate(ids, use_cache=False, **kw)
    assert with_cache.shape[1] == ids.shape[1] + 12
    assert torch.equal(with_cache, without)
    # the experts really differ: this MoE is not the base model
    assert not torch.allclose(logits(tmp_path / "moe", ids), logits(base, ids), atol=1e-3)


def test_expert_weights_land_in_the_v5_stacked_layout(tmp_path, llama_family):
    base, fts = llama_family
    build_moe(recipe(base, fts), tmp_path / "moe")
    moe = load_model(tmp_path / "moe", dtype=torch.float32)
    ft1 = load_model(fts[1], dtype=torch.float32)
    experts = moe.model.layers[1].mlp.experts
    dense = ft1.model.layers[1].mlp
    gate_up = torch.cat([dense.gate_proj.weight, dense.up_proj.weight])
    torch.testing.assert_close(experts.gate_up_proj[1], gate_up)
    torch.testing.assert_close(experts.down_proj[1], dense.down_proj.weight)
    base_model = load_model(base, dtype=torch.float32)
    torch.testing.assert_close(
        moe.model.layers[0].self_attn.q_proj.weight, base_model.model.layers[0].self_attn.q_proj.weight
    )


def test_average_shared_weights_is_branch_train_mix(tmp_path, llama_family):
    base, fts = llama_family
    build_moe(recipe(base, fts[:2], shared_weights="average", router_init="random"), tmp_path / "moe")
    moe = load_model(tmp_path / "moe", dtype=torch.float32)
    parts = [load_model(f, dtype=torch.float32).model.norm.weight for f in fts[:2]]
    torch.testing.assert_close(moe.model.norm.weight, (parts[0] + parts[1]) / 2)


def test_qwen2_moe_with_shared_expert_loads_and_generates(tmp_path, make_dense):
    dense = make_dense(tmp_path / "dense", "qwen2")
    r = recipe(dense, [dense] * 3, shared_expert=SharedExpertSpec(str(dense)), router_init="random")
    result = build_moe(r, tmp_path / "moe")
    model = load_model(tmp_path / "moe", dtype=torch.float32)
    assert model.config.shared_expert_intermediate_size == 64
    # shared expert gate starts at 0: output = routed + sigmoid(0)·shared = 1.5 × the dense MLP
    layer, moe_layer = load_model(dense, dtype=torch.float32).model.layers[0], model.model.layers[0]
    x = torch.randn(1, 3, 32)
    torch.testing.assert_close(moe_layer.mlp(x), 1.5 * layer.mlp(x), rtol=1e-4, atol=1e-5)
    assert result.active_params < result.total_params


def test_build_prints_counts_consistent_with_config(tmp_path, llama_family):
    base, fts = llama_family
    result = build_moe(recipe(base, fts, num_experts_per_tok=1, router_init="random"), tmp_path / "moe")
    model = load_model(tmp_path / "moe", dtype=torch.float32)
    assert result.total_params == sum(p.numel() for p in model.parameters())
    per_expert = 3 * 32 * 64
    assert result.total_params - result.active_params == 2 * per_expert * 2  # 2 layers × 2 skipped experts


def test_mixtral_8x7b_parameter_counts_on_meta_device():
    from transformers import MixtralConfig

    from lmfuse.moe.params import moe_param_counts

    counts = moe_param_counts(MixtralConfig())
    assert counts.total == 46_702_792_704
    assert counts.active == 12_879_925_248


def test_validation_happens_before_writing(tmp_path, llama_family, make_dense):
    base, fts = llama_family
    other = make_dense(tmp_path / "qwen", "qwen2")
    out = tmp_path / "out"
    with pytest.raises(IncompatibleModelsError) as info:
        build_moe(recipe(base, [fts[0], other, tmp_path / "missing"]), out)
    text = str(info.value)
    assert "experts[2]" in text and "config.json" in text
    assert not out.exists()
    with pytest.raises(IncompatibleModelsError, match="qwen2"):
        build_moe(recipe(base, [fts[0], other]), out)
    assert not out.exists() and not list(tmp_path.glob(".out.partial-*"))


def test_shape_mismatch_and_recipe_errors_are_reported(tmp_path, llama_family):
    from lmfuse.testing import save_tiny

    base, fts = llama_family
    wide = save_tiny(tmp_path / "wide", "llama", intermediate_size=48)
    with pytest.raises(IncompatibleModelsError, match="shape"):
        build_moe(recipe(base, [fts[0], wide]), tmp_path / "out")
    bad = BuildRecipe(base=str(base), experts=[ExpertSpec(str(fts[0]))], num_experts_per_tok=3)
    with pytest.raises(ConfigError) as info:
        build_moe(bad, tmp_path / "out")
    assert len(info.value.problems) == 3  # one expert, k too large, no prompts for hidden init


def test_refuses_non_empty_output_unless_overwrite(tmp_path, llama_family):
    base, fts = llama_family
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(CheckpointError, match="overwrite"):
        build_moe(recipe(base, fts[:2], router_init="random"), out)
    with pytest.raises(CheckpointError, match="did not write"):  # a user's file: never replaced
        build_moe(recipe(base, fts[:2], router_init="random"), out, overwrite=True)
    assert (out / "keep.txt").read_text() == "x"
    (out / "keep.txt").unlink()
    build_moe(recipe(base, fts[:2]), out)
    build_moe(recipe(base, fts[:2], router_init="random"), out, overwrite=True)
    assert (out / "model.safetensors").is_file()
    assert "router_init: random" in (out / "lmfuse_recipe.yaml").read_text()


def test_qwen2_moe_shared_expert_enters_at_half_strength_as_the_readme_says(
    tmp_path, make_dense, make_finetune
):
    """Distinct experts and shared expert: each built block is Σ_j w_j·MLP_j(x) + sigmoid(0)·MLP_shared(x)
    with the routed MLPs and the shared MLP taken from their dense sources (the gate is written as zeros)."""
    base = make_dense(tmp_path / "base", "qwen2")
    fts = [make_finetune(base, tmp_path / f"ft{i}", seed=i + 1) for i in range(3)]
    shared = make_finetune(base, tmp_path / "shared", seed=9)
    r = recipe(base, fts, shared_expert=SharedExpertSpec(str(shared)), router_init="random")
    build_moe(r, tmp_path / "moe")
    model = load_model(tmp_path / "moe", dtype=torch.float32)
    dense = [load_model(p, dtype=torch.float32) for p in fts]
    shared_model = load_model(shared, dtype=torch.float32)
    x = torch.randn(7, 32, generator=torch.Generator().manual_seed(0))
    for layer, block in enumerate(model.model.layers):
        mlp = block.mlp
        assert torch.count_nonzero(mlp.shared_expert_gate.weight) == 0
        probs = torch.softmax(x @ mlp.gate.weight.T, -1)
        top = probs.topk(r.num_experts_per_tok, -1)
        w = top.values / top.values.sum(-1, keepdim=True)  # Qwen2-MoE built with norm_topk_prob=True
        with torch.no_grad():
            outs = torch.stack([d.model.layers[layer].mlp(x) for d in dense], 1)  # (S, E, M)
            routed = (w[..., None] * outs.gather(1, top.indices[..., None].expand(-1, -1, 32))).sum(1)
            expected = routed + 0.5 * shared_model.model.layers[layer].mlp(x)
            torch.testing.assert_close(mlp(x[None])[0], expected, rtol=1e-5, atol=1e-6)
