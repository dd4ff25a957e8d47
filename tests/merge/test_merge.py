"""End-to-end invariants of ``lmfuse.merge`` on tiny saved models and the zoo: self-merges return the
model bit for bit, reductions hold tensor by tensor, every output loads and generates in transformers."""

from __future__ import annotations

import shutil

import pytest
import torch
import yaml

from lmfuse.errors import ConfigError
from lmfuse.merge import merge, plan_merge
from lmfuse.merge.methods import get_method, method_names

from .conftest import recipe, tensors

SELF_RECIPES = {
    "linear": dict(models=[("base", {"weight": 0.3}), ("base2", {"weight": 0.7})]),
    "karcher": dict(models=[("base", {"weight": 0.3}), ("base2", {"weight": 0.7})]),
    "nuslerp": dict(models=[("base", {"weight": 1.0}), ("base2", {"weight": 2.0})]),
    "slerp": dict(base="base", models=[("base", {}), ("base2", {})], parameters={"t": 0.3}),
    "model_stock": dict(base="base", models=[("base2", {}), ("base3", {})]),
}
DEFAULT_SELF = dict(base="base", models=[("base2", {"weight": 0.7, "density": 0.5})])


def build(method: str, paths: dict, spec: dict, **extra):
    models = [{"model": str(paths[m]), "parameters": p} for m, p in spec["models"]]
    fields = dict(merge_method=method, models=models, parameters=spec.get("parameters", {}), **extra)
    if spec.get("base"):
        fields["base_model"] = str(paths[spec["base"]])
    return recipe(**fields)


@pytest.fixture(scope="module")
def copies(family, tmp_path_factory):
    paths = dict(family)
    paths["base3"] = shutil.copytree(family["base"], tmp_path_factory.mktemp("b3") / "base3")
    return paths


@pytest.mark.parametrize("method", method_names())
def test_self_merge_returns_the_model_bit_for_bit(method, copies, tmp_path):
    spec = SELF_RECIPES.get(method, DEFAULT_SELF)
    if method not in SELF_RECIPES and "density" not in get_method(method).model_params:
        spec = dict(base="base", models=[("base2", {"weight": 0.7})])
    out = merge(build(method, copies, spec), tmp_path / "out").out
    got, want = tensors(out), tensors(copies["base"])
    assert got.keys() == want.keys()
    for name, t in want.items():
        assert got[name].dtype == t.dtype and torch.equal(got[name], t), name


def test_self_merge_of_the_zoo_in_float16(tmp_path):
    # One name twice is one model: slerp needs a second one, which this recipe lacks.
    with pytest.raises(ConfigError, match="slerp merges at least 1"):
        recipe(merge_method="slerp", base_model="zoo:base", models=[{"model": "zoo:base"}, {"model": "zoo:base"}],
               parameters={"t": 0.5})  # fmt: skip
    from lmfuse import zoo

    copy = shutil.copytree(zoo.path("base"), tmp_path / "base-copy")
    r = recipe(merge_method="slerp", base_model="zoo:base", models=[{"model": "zoo:base"}, {"model": str(copy)}],
               parameters={"t": [0.2, 0.9]})  # fmt: skip
    out = merge(r, tmp_path / "out").out
    got, want = tensors(out), tensors(zoo.path("base"))
    assert all(torch.equal(got[k], v) and got[k].dtype == torch.float16 for k, v in want.items())


def test_linear_one_zero_returns_the_first_and_task_arithmetic_one_model_returns_it(family, tmp_path):
    r = recipe(merge_method="linear", models=[{"model": family["a"], "parameters": {"weight": 1.0}},
                                              {"model": family["b"], "parameters": {"weight": 0.0}}])  # fmt: skip
    got, want = tensors(merge(r, tmp_path / "lin").out), tensors(family["a"])
    assert all(torch.equal(got[k], v) for k, v in want.items())
    r = recipe(merge_method="task_arithmetic", base_model=family["base"],
               models=[{"model": family["b"], "parameters": {"weight": 1.0}}])  # fmt: skip
    got, want = tensors(merge(r, tmp_path / "ta").out), tensors(family["b"])
    assert all(torch.equal(got[k], v) for k, v in want.items())


def test_slerp_endpoints_on_models(family, tmp_path):
    for t, expect in ((0.0, "base"), (1.0, "a")):
        r = recipe(merge_method="slerp", base_model=family["base"], models=[{"model": family["base"]}, {"model": family["a"]}],
                   parameters={"t": t})  # fmt: skip
        got, want = tensors(merge(r, tmp_path / f"s{t}").out), tensors(family[expect])
        assert all(torch.equal(got[k], v) for k, v in want.items())


def test_gradient_gives_layer_i_weight_i_over_n_minus_1_and_filters_pick_by_name(family):
    r = recipe(merge_method="linear", models=[
        {"model": family["a"], "parameters": {"weight": [0, 1]}},
        {"model": family["b"], "parameters": {"weight": [{"filter": "self_attn", "value": 0.25},
                                                          {"filter": "mlp", "value": [1, 0]}, {"value": 0.5}]}},
    ])  # fmt: skip
    plan = plan_merge(r)
    n = plan.num_layers
    assert n == 4
    for job in plan.jobs:
        if job.layer is not None:
            assert job.per_model[0]["weight"] == pytest.approx(job.layer / (n - 1))
            second = job.per_model[1]["weight"]
            if "self_attn" in job.name:
                assert second == 0.25
            elif "mlp" in job.name:
                assert second == pytest.approx(1 - job.layer / (n - 1))
            else:
                assert second == 0.5


def finetune_recipe(method: str, family: dict, **extra):
    """``method`` over the fine-tunes a, b, c of base (two for nuslerp, one for slerp)."""
    m = get_method(method)
    names = {"slerp": "a", "nuslerp": "ab"}.get(method, "abc")
    params = {k: v for k, v in {"weight": 0.5, "density": 0.6}.items() if k in m.model_params}
    models = [{"model": family[k], "parameters": dict(params)} for k in names]
    fields = dict(merge_method=method, models=models, **extra)
    if m.base != "unused":
        fields["base_model"] = family["base"]
    if method == "slerp":
        models.insert(0, {"model": family["base"]})
        fields["parameters"] = {"t": [0, 0.5, 1]}
    return recipe(**fields)


@pytest.mark.parametrize("method", method_names())
def test_merges_load_in_transformers_and_generate_the_same_with_and_without_cache(method, family, tmp_path):
    from transformers import AutoModelForCausalLM

    out = merge(finetune_recipe(method, family, random_seed=3), tmp_path / "m").out
    model = AutoModelForCausalLM.from_pretrained(out).eval()
    ids = torch.tensor([[1, 5, 9, 12, 7]])
    with torch.no_grad():
        a = model.generate(ids, max_new_tokens=8, do_sample=False, use_cache=True)
        b = model.generate(ids, max_new_tokens=8, do_sample=False, use_cache=False)
    assert torch.equal(a, b)
    merged, base = tensors(out), tensors(family["base"])
    assert any(not torch.equal(merged[k], base[k]) for k in base if "mlp" in k)  # it did merge something
    saved = yaml.safe_load((out / "lmfuse_recipe.yaml").read_text())
    assert saved["merge_method"] == method and saved["random_seed"] == 3
    assert (out / "merge_plan.json").is_file() and (out / "README.md").is_file()


def test_dare_is_reproducible_and_seeded(family, tmp_path):
    def run(seed, out):
        models = [{"model": family[k], "parameters": {"weight": 1.0, "density": 0.3}} for k in "ab"]
        r = recipe(merge_method="dare_ties", base_model=family["base"], models=models, random_seed=seed)
        return tensors(merge(r, tmp_path / out).out)

    one, two, other = run(1, "x"), run(1, "y"), run(2, "z")
    assert all(torch.equal(one[k], two[k]) for k in one)
    assert any(not torch.equal(one[k], other[k]) for k in one if "mlp" in k)


def test_passthrough_is_the_graft(family, tmp_path):
    from lmfuse.graft import GraftRecipe, Slice, graft

    r = recipe(merge_method="passthrough", slices=[
        {"sources": [{"model": family["a"], "layer_range": [0, 3]}]},
        {"sources": [{"model": family["b"], "layer_range": [1, 4]}]},
    ])  # fmt: skip
    got = tensors(merge(r, tmp_path / "p").out)
    g = graft(GraftRecipe([Slice(str(family["a"]), [0, 3]), Slice(str(family["b"]), [1, 4])]), tmp_path / "g")
    want = tensors(g.out)
    assert got.keys() == want.keys() and all(torch.equal(got[k], v) for k, v in want.items())


def test_slices_merge_layer_ranges(family, tmp_path):
    r = recipe(merge_method="linear", slices=[
        {"sources": [{"model": family["a"], "layer_range": [0, 2], "parameters": {"weight": 1.0}},
                     {"model": family["b"], "layer_range": [2, 4], "parameters": {"weight": 0.0}}]},
    ])  # fmt: skip
    out = merge(r, tmp_path / "s").out
    got, a = tensors(out), tensors(family["a"])
    assert sum("layers." in k for k in got) == sum("layers.0." in k or "layers.1." in k for k in a)
    assert torch.equal(got["model.layers.1.mlp.up_proj.weight"], a["model.layers.1.mlp.up_proj.weight"])
    import json

    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("method", ["linear", "ties", "dare_ties", "della"])
def test_cuda_merge_matches_cpu(method, family, tmp_path):
    models = [
        {
            "model": family[k],
            "parameters": {"weight": 0.5, **({"density": 0.5} if method != "linear" else {})},
        }
        for k in "ab"
    ]
    base = None if method == "linear" else family["base"]
    r = recipe(merge_method=method, base_model=base, models=models, random_seed=1)
    cpu = tensors(merge(r, tmp_path / "cpu").out)
    gpu = tensors(merge(r, tmp_path / "gpu", device="cuda").out)
    for name, t in cpu.items():  # masks come from CPU generators, so DARE/DELLA agree too
        assert torch.allclose(gpu[name], t, rtol=1e-6, atol=1e-7), name
