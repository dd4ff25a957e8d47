"""Every recipe in examples/merge/ validates against the zoo and writes a model that loads."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM

from lmfuse.merge import load_merge_recipe, merge

EXAMPLES = sorted((Path(__file__).parents[2] / "examples" / "merge").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_recipe(path, tmp_path):
    result = merge(load_merge_recipe(str(path)), tmp_path / "out")
    model = AutoModelForCausalLM.from_pretrained(result.out)
    assert model.config.num_hidden_layers == result.plan.num_layers == 4


def test_examples_exist():
    assert {p.name for p in EXAMPLES} >= {
        "ties_specialists.yaml",
        "slerp_gradient.yaml",
        "dare_ties_specialists.yaml",
    }
