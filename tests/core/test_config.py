from dataclasses import dataclass, field
from typing import Literal

import pytest

from lmfuse.core.config import dump_yaml, from_dict, load_config
from lmfuse.errors import ConfigError


@dataclass
class Slice:
    model: str
    layers: list[int]

    def validate(self) -> list[str]:
        if len(self.layers) != 2 or self.layers[0] >= self.layers[1]:
            return [f"layers: expected [start, end) with start < end, found {self.layers}"]
        return []


@dataclass
class Recipe:
    slices: list[Slice]
    dtype: Literal["float32", "bfloat16"] = "bfloat16"
    weight: float = 1.0
    head: str | None = None
    extra: dict[str, int] = field(default_factory=dict)


def test_valid_recipe_round_trips_through_yaml(tmp_path):
    data = {"slices": [{"model": "a", "layers": [0, 4]}], "weight": 2, "extra": {"x": 1}}
    recipe = from_dict(Recipe, data)
    assert recipe.slices[0] == Slice("a", [0, 4]) and recipe.weight == 2.0 and recipe.head is None
    path = tmp_path / "r.yaml"
    path.write_text(dump_yaml(recipe))
    assert load_config(Recipe, path) == recipe


def test_all_problems_reported_together_with_field_paths():
    data = {
        "slices": [{"model": "a", "layers": [0, 4]}, {"model": 3, "layers": [5, 2]}, {"layers": "x"}],
        "dtype": "int4",
        "weigth": 1,
    }
    with pytest.raises(ConfigError) as info:
        from_dict(Recipe, data)
    problems = info.value.problems
    text = str(info.value)
    assert "slices[1].model: expected a string, found 3" in problems
    assert any(p.startswith("slices[2].layers: expected a list") for p in problems)
    assert "slices[2].model: required field is missing" in problems
    assert "dtype: expected one of 'float32', 'bfloat16', found 'int4'" in problems
    assert "weigth: unknown field; did you mean 'weight'?" in problems
    assert "problems" in text


def test_validate_hook_runs_when_fields_are_well_typed():
    with pytest.raises(ConfigError, match=r"slices\[0\]: layers: expected \[start, end\)"):
        from_dict(Recipe, {"slices": [{"model": "a", "layers": [3, 1]}]})


def test_bools_are_not_numbers_and_top_level_must_be_mapping():
    with pytest.raises(ConfigError, match="weight: expected a number, found True"):
        from_dict(Recipe, {"slices": [], "weight": True})
    with pytest.raises(ConfigError, match="expected a mapping"):
        from_dict(Recipe, ["not", "a", "mapping"])


def test_yaml_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("slices: [\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(Recipe, bad)
    with pytest.raises(ConfigError, match="file not found"):
        load_config(Recipe, tmp_path / "missing.yaml")
