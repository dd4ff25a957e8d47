"""Every recipe in examples/graft/ loads, validates against the zoo and writes a loadable model."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM

from lmfuse import zoo
from lmfuse.graft import graft, load_recipe

EXAMPLES = sorted((Path(__file__).parents[2] / "examples" / "graft").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_recipe(path, tmp_path):
    recipe = load_recipe(str(path))
    missing = [m for m in recipe.model_names() if m.removeprefix("zoo:") not in zoo.names()]
    if missing:
        pytest.skip(f"zoo models not committed yet: {missing}")
    out = graft(recipe, tmp_path / "out").out
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.num_hidden_layers == len(recipe.layer_map())


def test_examples_exist():
    assert {p.name for p in EXAMPLES} >= {"dus.yaml", "splice.yaml"}
