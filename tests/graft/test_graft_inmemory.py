"""In-memory grafting: same model as the on-disk graft, layer_idx renumbered, sources untouched."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from lmfuse.errors import ConfigError
from lmfuse.graft import GraftRecipe, Slice, dus_recipe, graft_model
from lmfuse.graft.inmemory import decoder_layers
from lmfuse.graft.write import graft

IDS = torch.tensor([[1, 5, 9, 13, 20, 7, 30, 31], [1, 40, 41, 42, 3, 4, 5, 6]])


def _load(path):
    return AutoModelForCausalLM.from_pretrained(path).eval()


def _greedy(model, use_cache):
    with torch.no_grad():
        return model.generate(
            IDS[:1], max_new_tokens=12, do_sample=False, use_cache=use_cache, pad_token_id=0
        )


def _layer_indices(model):
    return [
        m.layer_idx for layer in decoder_layers(model) for m in layer.modules() if hasattr(m, "layer_idx")
    ]


def test_dus_in_memory_equals_dus_on_disk(tiny4, tmp_path):
    recipe = dus_recipe("m", 4, 1)
    src = _load(tiny4)
    before = {k: v.clone() for k, v in src.state_dict().items()}
    new = graft_model(src, recipe)
    disk = _load(graft(dus_recipe(str(tiny4), 4, 1), tmp_path / "dus").out)
    with torch.no_grad():
        assert torch.equal(new(IDS).logits, disk(IDS).logits)
    assert new.config.num_hidden_layers == 6 and src.config.num_hidden_layers == 4
    assert sorted(set(_layer_indices(new))) == list(range(6))
    assert sorted(set(_layer_indices(src))) == list(range(4))  # the source is not renumbered
    assert all(torch.equal(before[k], v) for k, v in src.state_dict().items())
    src_ptrs = {p.data_ptr() for p in src.parameters()}
    assert not src_ptrs & {p.data_ptr() for p in new.parameters()}  # nothing shared


def test_cached_generation_equals_uncached_only_after_renumbering(tiny4):
    new = graft_model(_load(tiny4), dus_recipe("m", 4, 1))
    assert torch.equal(_greedy(new, True), _greedy(new, False))
    # The bug renumbering fixes: copies keep their source index and share a cache slot.
    for i, (_, j) in enumerate(dus_recipe("m", 4, 1).layer_map()):
        for m in decoder_layers(new)[i].modules():
            if hasattr(m, "layer_idx"):
                m.layer_idx = j
    try:
        stale = _greedy(new, True)
    except Exception:  # noqa: BLE001 - a cache shape error is also a failure of stale indices
        return
    assert not torch.equal(stale, _greedy(new, False))


def test_splice_with_head_from_b_equals_disk(tiny4, tiny4b, tmp_path):
    recipe = GraftRecipe([Slice("a", [0, 3]), Slice("b", [2, 4])], embeddings="a", head="b")
    new = graft_model({"a": _load(tiny4), "b": _load(tiny4b)}, recipe)
    disk_recipe = GraftRecipe([Slice(str(tiny4), [0, 3]), Slice(str(tiny4b), [2, 4])])
    disk = _load(graft(disk_recipe, tmp_path / "sp").out)
    with torch.no_grad():
        assert torch.equal(new(IDS).logits, disk(IDS).logits)


def test_per_layer_config_in_memory(tmp_path, config_model):
    from transformers import Gemma2Config

    types = ["sliding_attention", "full_attention", "full_attention", "sliding_attention"]
    config = Gemma2Config(
        vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=2, head_dim=8, sliding_window=4, layer_types=types, pad_token_id=0,
    )  # fmt: skip
    new = graft_model(_load(config_model(tmp_path / "g", config)), dus_recipe("m", 4, 1))
    assert new.config.layer_types == types[:3] + types[1:]
    assert torch.equal(_greedy(new, True), _greedy(new, False))


def test_in_memory_errors_listed_together(tiny4):
    recipe = GraftRecipe([Slice("m", [0, 9]), Slice("x", [2, 1])], dtype="int3")
    with pytest.raises(ConfigError) as info:
        graft_model({"m": _load(tiny4)}, recipe)
    assert len(info.value.problems) == 4
