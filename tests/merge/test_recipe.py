"""Bad recipes and bad model sets: every problem reported at once, before anything is written."""

from __future__ import annotations

import pytest

from lmfuse.cli import main
from lmfuse.errors import ConfigError
from lmfuse.merge import merge, plan_merge
from lmfuse.merge.recipe import value_at
from lmfuse.merge.write import check_device
from lmfuse.testing import save_tiny

from .conftest import recipe


def problems_of(**fields) -> list[str]:
    with pytest.raises(ConfigError) as info:
        recipe(**fields)
    return info.value.problems


def test_unknown_and_refused_keys_are_all_reported_with_did_you_mean():
    found = problems_of(
        merge_method="ties",
        base_model="x",
        models=[{"model": "a", "parameters": {"densty": 0.5, "weight": "heavy"}}],
        parameters={"normalise": True, "filter_wise": True},
        out_dtpye="bfloat16",
        chat_template="chatml",
    )
    text = "\n".join(found)
    assert "chat_template: chat_template is not supported" in text
    assert "out_dtpye: unknown field; did you mean 'out_dtype'?" in text
    found = problems_of(
        merge_method="ties", base_model="x", chat_template="chatml",
        models=[{"model": "a", "parameters": {"densty": 0.5, "weight": "heavy"}}],
        parameters={"normalise": True, "filter_wise": True, "lambda": [0.5, "x"]}, dtype="float8",
    )  # fmt: skip
    text = "\n".join(found)
    for expected in (
        "chat_template: chat_template is not supported",
        "models[0].parameters.densty: unknown parameter for this method; did you mean 'density'?",
        "models[0].parameters.weight: expected a number, found 'heavy'",
        "parameters.normalise: unknown parameter for this method; did you mean 'normalize'?",
        "parameters.filter_wise: model_stock's filter_wise is not supported",
        "parameters.lambda[1]: expected a number, found 'x'",
        "dtype: expected one of",
    ):
        assert expected in text, (expected, text)


def test_method_shape_errors():
    assert any(
        "did you mean 'slerp'" in p for p in problems_of(merge_method="slrep", models=[{"model": "a"}])
    )
    found = problems_of(
        merge_method="task_arithmetic", models=[{"model": "a", "parameters": {"density": 0.5}}]
    )
    assert any("base_model: task_arithmetic needs a base model" in p for p in found)
    assert any("density: unknown parameter" in p for p in found)  # accepted-but-ignored keys are refused
    found = problems_of(
        merge_method="slerp", base_model="a", models=[{"model": "a"}, {"model": "b"}, {"model": "c"}]
    )
    assert any("at most 1" in p for p in found) and any("parameters.t: required by slerp" in p for p in found)
    found = problems_of(
        merge_method="ties",
        base_model="a",
        models=[{"model": "a", "parameters": {"weight": 1}}, {"model": "b", "parameters": {"density": 1.5}}],
    )
    assert any("the base model's parameters are not used" in p for p in found)
    assert any("density: expected a value in [0.0, 1.0], found 1.5" in p for p in found)
    assert any("exactly one of models: or slices:" in p for p in problems_of(merge_method="linear"))
    found = problems_of(merge_method="linear", slices=[{"sources": [{"model": "a", "layer_range": [0, 2]},
                                                                    {"model": "b", "layer_range": [3, 1]}]}])  # fmt: skip
    assert any("layer_range: expected [start, end)" in p for p in found)


def test_value_resolution():
    assert value_at([0, 1], "x", 0.25) == pytest.approx(0.25)
    assert value_at([0, 1, 0], "x", 0.75) == pytest.approx(0.5)
    assert value_at([{"filter": "mlp", "value": 2}], "model.layers.0.self_attn.q_proj.weight", 0.0) is None
    assert value_at([{"filter": "mlp", "value": 2}, {"value": 3}], "model.layers.0.mlp.up", 0.0) == 2


def test_model_problems_are_reported_together(family, tmp_path):
    from lmfuse.testing import char_tokenizer

    tok = char_tokenizer("abcdefghij0123456789")
    small = save_tiny(tmp_path / "small", "llama", tokenizer=tok, num_hidden_layers=4)
    tied = save_tiny(tmp_path / "tied", "llama", num_hidden_layers=4, tie_word_embeddings=True)
    wide = save_tiny(tmp_path / "wide", "llama", num_hidden_layers=4, intermediate_size=96)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    r = recipe(merge_method="ties", base_model=str(family["base"]), models=[
        {"model": str(small)}, {"model": str(tied)}, {"model": str(wide)}, {"model": str(tmp_path / "nope")},
    ])  # fmt: skip
    with pytest.raises(ConfigError) as info:
        plan_merge(r, out=tmp_path / "out")
    text = str(info.value)
    assert "exists and is not empty" in text and "nope" in text
    r = recipe(merge_method="ties", base_model=str(family["base"]), models=[
        {"model": str(small)}, {"model": str(tied)}, {"model": str(wide)}])  # fmt: skip
    with pytest.raises(ConfigError) as info:
        merge(r, tmp_path / "new")
    text = str(info.value)
    assert "vocabulary sizes differ" in text and "tie_word_embeddings differs" in text
    assert "intermediate_size differs" in text
    assert not (tmp_path / "new").exists()


def test_out_of_range_layers(family, tmp_path):
    r = recipe(merge_method="linear", tokenizer_source="union", slices=[{"sources": [
        {"model": str(family["a"]), "layer_range": [0, 6]}, {"model": str(family["b"]), "layer_range": [2, 8]}]}])  # fmt: skip
    with pytest.raises(ConfigError) as info:
        plan_merge(r)
    text = str(info.value)
    assert "[0, 6] is out of range" in text and "[2, 8] is out of range" in text


def test_device_is_checked():
    import torch

    assert check_device(None).type == "cpu"
    with pytest.raises(ConfigError, match="expected cpu"):
        check_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            check_device("cuda")


def test_cli_exit_2_with_every_problem_and_dry_run(family, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "merge_method: ties\nbase_model: x\nmodels:\n  - model: a\n    parameters: {densty: 2}\nparameters: {lamda: 1}\n"
    )
    assert main(["merge", str(bad), str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'density'" in err and "did you mean 'lambda'" in err
    good = tmp_path / "good.yaml"
    good.write_text(
        f"merge_method: dare_ties\nbase_model: {family['base']}\nmodels:\n"
        f"  - model: {family['a']}\n    parameters: {{weight: [0.2, 1.0], density: 0.5}}\n"
        f"  - model: {family['b']}\n    parameters: {{weight: 0.5, density: 0.5}}\n"
    )
    assert main(["merge", str(good), "--dry-run", "--plot", str(tmp_path / "p.png")]) == 0
    out = capsys.readouterr().out
    assert "dare_ties" in out and "(by layer)" in out and (tmp_path / "p.png").stat().st_size > 1000
    assert not (tmp_path / "o").exists()
    assert main(["merge", str(good), str(tmp_path / "m")]) == 0
    assert (tmp_path / "m" / "model.safetensors").is_file()
