"""Tokenizers compared by what they do, shared by graft and moe build (issue 15, items 6 and 16)."""

from __future__ import annotations

import json
import shutil

from lmfuse.cli import main
from lmfuse.core.tokenizers import tokenizer_difference
from lmfuse.zoo import path as zoo_path


def _permuted(tmp, name="add"):
    """A copy of a zoo model whose tokenizer swaps the ids of '0' and '1': same size, same shapes."""
    d = tmp / f"{name}-permuted"
    shutil.copytree(zoo_path(name), d)
    spec = json.loads((d / "tokenizer.json").read_text())
    vocab = spec["model"]["vocab"]
    vocab["0"], vocab["1"] = vocab["1"], vocab["0"]
    (d / "tokenizer.json").write_text(json.dumps(spec))
    return d


def _resaved(tmp, name="add"):
    """A copy whose tokenizer_config.json gained keys (as a re-save by transformers adds): same tokenizer."""
    d = tmp / f"{name}-resaved"
    shutil.copytree(zoo_path(name), d)
    cfg = json.loads((d / "tokenizer_config.json").read_text())
    (d / "tokenizer_config.json").write_text(json.dumps({**cfg, "is_local": True, "local_files_only": True}))
    return d


def test_difference_by_behaviour(tmp_path):
    base = zoo_path("base")
    assert tokenizer_difference(base, zoo_path("add")) is None
    assert tokenizer_difference(base, _resaved(tmp_path)) is None
    diff = tokenizer_difference(base, _permuted(tmp_path), "base", "perm")
    assert diff is not None and "2 token strings have different ids" in diff


def test_moe_build_refuses_an_expert_with_a_permuted_tokenizer(tmp_path, capsys):
    recipe = tmp_path / "moe.yaml"
    recipe.write_text(
        f"base: zoo:base\nexperts:\n  - source: {_permuted(tmp_path)}\n    positive_prompts: ['Q: 1+2= A:']\n"
        "  - source: zoo:sub\n    positive_prompts: ['Q: 3-1= A:']\nnum_experts_per_tok: 1\n"
    )
    assert main(["moe", "build", str(recipe), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "experts[0]: its tokenizer differs from the base's" in err
    assert not (tmp_path / "out").exists()


def test_graft_refuses_permuted_but_accepts_a_resaved_tokenizer(tmp_path, capsys):
    out = tmp_path / "g"
    splice = ["graft", "splice", "zoo:base"]
    assert main([*splice, str(_permuted(tmp_path)), str(out), "--first", "2", "--last", "2"]) == 2
    assert "differ" in capsys.readouterr().err and not out.exists()
    assert (
        main(
            [*splice, str(_resaved(tmp_path)), str(out), "--first", "2", "--last", "2", "--untie-embeddings"]
        )
        == 0
    )
