"""Issue 16, item 5: ``graft --dry-run`` plans a 1B model from config.json and headers in well under a
second, without importing transformers, and plans exactly what the meta-model path plans."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lmfuse.graft.plan import plan_graft
from lmfuse.graft.recipe import GraftRecipe, Slice, dus_recipe
from lmfuse.graft.sources import input_embedding_names, meta_model, open_source

SRC = str(Path(__file__).resolve().parents[2] / "src")


@pytest.fixture
def llama_1b(tmp_path, hollow) -> Path:
    """A Llama-3.2-1B-shaped checkpoint whose data is a sparse hole (headers only matter here)."""
    from transformers import LlamaConfig

    config = LlamaConfig(
        vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
        num_attention_heads=32, num_key_value_heads=8, tie_word_embeddings=True,
    )  # fmt: skip
    return hollow(tmp_path / "llama1b", config)


def test_dry_run_plan_of_a_1b_model_is_fast_and_never_imports_transformers(llama_1b):
    code = (
        "import sys, time, torch\n"
        "from lmfuse.graft.plan import plan_graft\nfrom lmfuse.graft.recipe import dus_recipe\n"
        f"t = time.perf_counter(); p = plan_graft(dus_recipe({str(llama_1b)!r}, 16, 4), check_config=False)\n"
        "print(time.perf_counter() - t, p.num_parameters, len(p.layer_map), 'transformers' in sys.modules)\n"
    )
    env = {**os.environ, "PYTHONPATH": SRC}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    seconds, params, layers, imported = proc.stdout.split()
    assert imported == "False" and int(layers) == 24
    assert float(seconds) < 0.5, f"planning took {seconds} s"  # was 7.5-10 s through from_config
    # 24 layers of Llama-3.2-1B shape + tied embeddings + final norm, counted from the headers
    layer = 2 * 2048 * 2048 + 2 * 2048 * 512 + 3 * 2048 * 8192 + 2 * 2048  # q, o; k, v; mlp; 2 norms
    assert int(params) == 24 * layer + 128256 * 2048 + 2048


@pytest.mark.parametrize("tie", [True, False])
def test_fast_path_plans_what_the_meta_model_path_plans(tiny4, tiny4b, tie):
    src = open_source(str(tiny4))
    assert src.head_name == "lm_head.weight"
    assert src.embed_names == [n for n in input_embedding_names(src.config)]
    recipe = GraftRecipe([Slice(str(tiny4), [0, 3]), Slice(str(tiny4b), [1, 4])], tie_word_embeddings=tie)
    fast = plan_graft(recipe, check_config=False)
    slow = plan_graft(recipe)  # builds the meta model: its parameter count is the reference
    meta = meta_model(slow.config)
    assert [(t.name, t.model, t.source) for t in fast.tensors] == [
        (t.name, t.model, t.source) for t in slow.tensors
    ]
    assert fast.num_parameters == slow.num_parameters == sum(p.numel() for p in meta.parameters())
    if not tie:
        assert sorted(t.name for t in fast.tensors) == sorted(meta.state_dict())
    assert fast.output_bytes == slow.output_bytes


def test_dus_dry_run_command_prints_the_same_plan(llama_1b, capsys):
    from lmfuse.cli import main

    assert main(["graft", "dus", str(llama_1b), "--drop", "4", "--dry-run"]) == 0
    out = capsys.readouterr().out
    full = plan_graft(dus_recipe(str(llama_1b), 16, 4))  # with the transformers config check
    assert f"{full.num_parameters:,}" in out and "24 (llama)" in out
