"""Every invalid recipe fails before a byte is written, with all problems reported at once."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from lmfuse.errors import ConfigError
from lmfuse.graft import GraftRecipe, Slice, dus_recipe
from lmfuse.graft.recipe import recipe_from_dict
from lmfuse.graft.write import graft
from lmfuse.testing import DEFAULT_CHARS, char_tokenizer, save_tiny


def _fails(recipe, out, *needles, **kw):
    before = sorted(out.iterdir()) if out.exists() else None
    with pytest.raises(ConfigError) as info:
        graft(recipe, out, **kw)
    text = str(info.value)
    for needle in needles:
        assert needle in text, text
    assert (sorted(out.iterdir()) if out.exists() else None) == before  # nothing written
    assert not list(out.parent.glob(f".{out.name}.partial-*"))
    return info.value


def test_out_of_range_layers(tiny4, tmp_path):
    _fails(
        GraftRecipe([Slice(str(tiny4), [0, 3]), Slice(str(tiny4), [2, 6])]),
        tmp_path / "o",
        "out of range",
        "4 layers",
    )


def test_malformed_slices_and_fields_all_at_once(tiny4, tmp_path):
    recipe = GraftRecipe(
        [Slice(str(tiny4), [3, 3]), Slice(str(tiny4), [1]), Slice(str(tiny4), [0, 9])],
        embeddings="nope",
        dtype="int3",
    )
    err = _fails(recipe, tmp_path / "o", "start < end", "[start, end]", "embeddings", "dtype", "out of range")
    assert len(err.problems) == 5


def test_yaml_shaped_errors_name_fields():
    with pytest.raises(ConfigError) as info:
        recipe_from_dict({"slices": [{"model": "a", "layer": [0, 1]}], "haed": "a"})
    text = str(info.value)
    assert "slices[0].layer: unknown field; did you mean 'layers'?" in text and "did you mean 'head'?" in text


def test_missing_model_and_empty_slices(tmp_path):
    _fails(GraftRecipe([Slice(str(tmp_path / "absent"), [0, 1])]), tmp_path / "o", "directory not found")
    _fails(GraftRecipe([]), tmp_path / "o", "at least one slice")


def test_different_architecture(tiny4, tmp_path):
    qwen = save_tiny(tmp_path / "qwen", "qwen2", num_hidden_layers=4)
    _fails(
        GraftRecipe([Slice(str(tiny4), [0, 2]), Slice(str(qwen), [2, 4])]), tmp_path / "o", "one architecture"
    )


def test_different_layer_shapes(tiny4, tmp_path):
    wide = save_tiny(tmp_path / "wide", "llama", num_hidden_layers=4, intermediate_size=96)
    _fails(
        GraftRecipe([Slice(str(tiny4), [0, 2]), Slice(str(wide), [2, 4])]),
        tmp_path / "o",
        "do not match layer 0",
        "mlp.",
    )


def test_different_vocabulary_size(tiny4, tmp_path):
    big = save_tiny(
        tmp_path / "big", "llama", tokenizer=char_tokenizer(DEFAULT_CHARS + "#$%"), num_hidden_layers=4
    )
    _fails(
        GraftRecipe([Slice(str(tiny4), [0, 2]), Slice(str(big), [2, 4])]),
        tmp_path / "o",
        "vocabulary sizes differ",
    )


def test_different_tokenizer_same_size_and_override(tiny4, tmp_path):
    other = save_tiny(
        tmp_path / "rev", "llama", tokenizer=char_tokenizer(DEFAULT_CHARS[::-1]), num_hidden_layers=4
    )
    recipe = GraftRecipe([Slice(str(tiny4), [0, 2]), Slice(str(other), [2, 4])])
    _fails(recipe, tmp_path / "o", "tokenizers of", "check_tokenizer: false")
    recipe.check_tokenizer = False
    assert graft(recipe, tmp_path / "o").out.is_dir()


def test_tied_embeddings_would_drop_the_head(tiny4, tmp_path):
    tied = save_tiny(tmp_path / "tied", "llama", num_hidden_layers=4, tie_word_embeddings=True)
    recipe = GraftRecipe([Slice(str(tied), [0, 2]), Slice(str(tiny4), [2, 4])])
    _fails(recipe, tmp_path / "o", "ties lm_head", "tie_word_embeddings: false")
    recipe.tie_word_embeddings = False
    out = graft(recipe, tmp_path / "o").out
    plan = json.loads((out / "graft_plan.json").read_text())
    assert plan["tensors"]["lm_head.weight"] == {"model": str(tiny4), "tensor": "lm_head.weight"}
    # A tied model grafted alone stays tied; untying it writes its embeddings as lm_head.
    out2 = graft(dus_recipe(str(tied), 4, 1, tie_word_embeddings=False), tmp_path / "o2").out
    plan2 = json.loads((out2 / "graft_plan.json").read_text())
    assert plan2["tensors"]["lm_head.weight"]["tensor"] == "model.embed_tokens.weight"
    out3 = graft(dus_recipe(str(tied), 4, 1), tmp_path / "o3").out
    assert "lm_head.weight" not in json.loads((out3 / "graft_plan.json").read_text())["tensors"]


def test_mixed_dtypes_need_an_explicit_dtype(tiny4, tmp_path):
    from transformers import AutoModelForCausalLM

    half = tmp_path / "half"
    AutoModelForCausalLM.from_pretrained(tiny4, dtype=torch.bfloat16).save_pretrained(half)
    char_tokenizer().save_pretrained(half)
    recipe = GraftRecipe([Slice(str(tiny4), [0, 2]), Slice(str(half), [2, 4])])
    _fails(recipe, tmp_path / "o", "different dtypes")
    recipe.dtype = "float32"
    assert graft(recipe, tmp_path / "o").out.is_dir()


def test_unknown_layout_is_refused(tmp_path):
    d = tmp_path / "gpt"
    d.mkdir()
    save_file(
        {"transformer.h.0.attn.weight": torch.zeros(2, 2), "wte.weight": torch.zeros(4, 2)},
        str(d / "model.safetensors"),
    )
    (d / "config.json").write_text(json.dumps({"model_type": "llama", "num_hidden_layers": 1}))
    _fails(GraftRecipe([Slice(str(d), [0, 1])]), tmp_path / "o", "unknown layer layout")


def test_nonempty_output_is_refused_with_the_other_problems(tiny4, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    err = _fails(GraftRecipe([Slice(str(tiny4), [0, 9])]), out, "not empty", "out of range")
    assert len(err.problems) == 2 and (out / "keep.txt").read_text() == "mine"


def test_bounds_and_compatibility_problems_together(tiny4, tmp_path):
    wide = save_tiny(tmp_path / "wide", "llama", num_hidden_layers=4, intermediate_size=96)
    recipe = GraftRecipe([Slice(str(tiny4), [0, 2]), Slice(str(wide), [2, 9])], dtype="float32")
    err = _fails(recipe, tmp_path / "o", "out of range", "do not match layer 0")
    assert len(err.problems) == 2
