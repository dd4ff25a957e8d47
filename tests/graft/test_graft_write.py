"""Streaming graft to disk: bit-exact tensors per graft_plan.json, loadable output, remapped configs."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM

from lmfuse.core.checkpoint import CheckpointReader
from lmfuse.graft import GraftRecipe, Slice, dus_recipe, splice_recipe
from lmfuse.graft.plan import plan_graft
from lmfuse.graft.write import PLAN_FILE, graft


def _all_tensors(directory):
    reader = CheckpointReader(directory)
    return {k: reader.get(k) for k in reader.keys()}  # noqa: SIM118


@pytest.mark.parametrize("shard_bytes", [2 * 1024**3, 20_000])
def test_every_tensor_equals_its_source_per_plan(tiny4, tiny4b, tmp_path, shard_bytes):
    recipe = GraftRecipe(
        slices=[Slice(str(tiny4), [0, 3]), Slice(str(tiny4b), [1, 4]), Slice(str(tiny4), [2, 4])],
        head=str(tiny4b),
    )
    out = graft(recipe, tmp_path / "out", max_shard_bytes=shard_bytes).out
    plan = json.loads((out / PLAN_FILE).read_text())
    got = _all_tensors(out)
    sources = {name: CheckpointReader(d) for name, d in plan["models"].items()}
    assert set(got) == set(plan["tensors"])
    for name, where in plan["tensors"].items():
        src = sources[where["model"]].get(where["tensor"])
        assert got[name].dtype == src.dtype and torch.equal(
            got[name].view(torch.uint8), src.view(torch.uint8)
        )
    assert [(x["model"], x["source_layer"]) for x in plan["layers"]] == recipe.layer_map()
    assert plan["tensors"]["lm_head.weight"]["model"] == str(tiny4b)
    assert plan["tensors"]["model.embed_tokens.weight"]["model"] == str(tiny4)
    if shard_bytes < 10**6:
        assert (out / "model.safetensors.index.json").is_file()


def _greedy(model, ids, use_cache):
    with torch.no_grad():
        return model.generate(ids, max_new_tokens=12, do_sample=False, use_cache=use_cache, pad_token_id=0)


@pytest.mark.parametrize("arch", ["llama", "mistral", "qwen2"])
def test_output_loads_and_cached_generation_equals_uncached(arch, tmp_path):
    from lmfuse.testing import save_tiny

    src = save_tiny(tmp_path / "src", arch, num_hidden_layers=4, seed=3)
    out = graft(dus_recipe(str(src), 4, 1), tmp_path / "dus").out
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    assert model.config.num_hidden_layers == 6
    ids = torch.tensor([[1, 5, 9, 13, 20, 7]])
    assert torch.equal(_greedy(model, ids, True), _greedy(model, ids, False))
    assert (out / "tokenizer.json").is_file() and (out / "README.md").is_file()


def test_identity_graft_reproduces_logits(tiny4, tmp_path):
    recipe = GraftRecipe(slices=[Slice(str(tiny4), [0, 2]), Slice(str(tiny4), [2, 4])])
    out = graft(recipe, tmp_path / "same").out
    a = AutoModelForCausalLM.from_pretrained(tiny4).eval()
    b = AutoModelForCausalLM.from_pretrained(out).eval()
    ids = torch.randint(4, 60, (2, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(a(ids).logits, b(ids).logits)


def test_dtype_cast(tiny4, tmp_path):
    out = graft(dus_recipe(str(tiny4), 4, 2, dtype="bfloat16"), tmp_path / "bf16").out
    got, src = _all_tensors(out), _all_tensors(tiny4)
    assert all(t.dtype == torch.bfloat16 for t in got.values())
    assert torch.equal(
        got["model.layers.2.mlp.up_proj.weight"], src["model.layers.2.mlp.up_proj.weight"].bfloat16()
    )
    assert AutoModelForCausalLM.from_pretrained(out).dtype == torch.bfloat16


def _per_layer_configs():
    from transformers import Gemma2Config, Gemma3TextConfig, Qwen3Config

    common = dict(
        vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, max_position_embeddings=128, pad_token_id=0, bos_token_id=1,
        eos_token_id=2,
    )  # fmt: skip
    types = ["sliding_attention", "full_attention", "full_attention", "sliding_attention"]
    return [
        Gemma2Config(**common, sliding_window=4, layer_types=types),
        Gemma3TextConfig(**common, sliding_window=4, layer_types=types),
        Qwen3Config(
            **common, sliding_window=4, use_sliding_window=True, layer_types=types, tie_word_embeddings=False
        ),
    ]


@pytest.mark.parametrize("config", _per_layer_configs(), ids=["gemma2", "gemma3", "qwen3"])
def test_per_layer_config_lists_are_remapped(config, tmp_path, config_model):
    src = config_model(tmp_path / "src", config)
    out = graft(dus_recipe(str(src), 4, 1), tmp_path / "out").out
    saved = json.loads((out / "config.json").read_text())
    types = config.layer_types
    assert saved["layer_types"] == types[0:3] + types[1:4]
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    assert model.config.layer_types == saved["layer_types"]
    ids = torch.tensor([[1, 5, 9, 13, 20, 7, 8, 9]])
    assert torch.equal(_greedy(model, ids, True), _greedy(model, ids, False))
    # What a tool that rewrites only num_hidden_layers produces does not load (the reason for remapping):
    broken = dict(saved, layer_types=types)
    (out / "config.json").write_text(json.dumps(broken))
    with pytest.raises(Exception, match="layer_types|num_hidden_layers"):
        AutoModelForCausalLM.from_pretrained(out)


def test_mistral_7b_shaped_dus_parameter_count(tmp_path, hollow):
    from transformers import MistralConfig

    config = MistralConfig(
        vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, tie_word_embeddings=False,
    )  # fmt: skip
    src = hollow(tmp_path / "m7b", config)
    plan = plan_graft(dus_recipe(str(src), 32, 8))
    assert len(plan.layer_map) == 48
    assert plan.num_parameters == 10_731_524_096
    assert plan.output_bytes == 2 * 10_731_524_096
    assert plan.peak_memory_bytes < 1.5 * 1024**3  # byte copies: no tensor is materialised


def test_splice_takes_last_layers_of_b(tiny4, tiny4b, tmp_path):
    out = graft(splice_recipe(str(tiny4), str(tiny4b), 4, first=3, last=2), tmp_path / "sp").out
    plan = json.loads((out / PLAN_FILE).read_text())
    assert [(x["model"], x["source_layer"]) for x in plan["layers"]] == [
        (str(tiny4), 0), (str(tiny4), 1), (str(tiny4), 2), (str(tiny4b), 2), (str(tiny4b), 3),
    ]  # fmt: skip
    with safe_open(str(out / "model.safetensors"), framework="pt") as h:
        assert h.metadata() == {"format": "pt"}


def test_sharded_and_bin_sources(tiny4, tmp_path):
    """Sources in sharded safetensors (with an index) and in legacy pytorch_model.bin graft the same."""
    import shutil

    sharded = graft(
        GraftRecipe([Slice(str(tiny4), [0, 4])]), tmp_path / "sharded", max_shard_bytes=20_000
    ).out
    assert (sharded / "model.safetensors.index.json").is_file()
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    torch.save(_all_tensors(tiny4), legacy / "pytorch_model.bin")
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny4 / name, legacy / name)
    a = graft(dus_recipe(str(sharded), 4, 1), tmp_path / "a").out
    b = graft(dus_recipe(str(legacy), 4, 1), tmp_path / "b").out
    c = graft(dus_recipe(str(tiny4), 4, 1), tmp_path / "c").out
    ta, tb, tc = _all_tensors(a), _all_tensors(b), _all_tensors(c)
    assert set(ta) == set(tb) == set(tc)
    assert all(torch.equal(ta[k], tc[k]) and torch.equal(tb[k], tc[k]) for k in tc)
