"""``tokenizer_source: union``: embeddings merged over the union of two different vocabularies."""

from __future__ import annotations

import json

import torch

from lmfuse.core.loading import load_tokenizer
from lmfuse.merge import merge
from lmfuse.testing import char_tokenizer, save_tiny

from .conftest import recipe, tensors


def test_union_vocabulary_linear_merge(tmp_path):
    a = save_tiny(tmp_path / "a", "llama", tokenizer=char_tokenizer("abcdef0123 "), seed=1)
    b = save_tiny(tmp_path / "b", "llama", tokenizer=char_tokenizer("abcxyz0123 "), seed=2)
    r = recipe(merge_method="linear", tokenizer_source="union", models=[
        {"model": a, "parameters": {"weight": 1.0}}, {"model": b, "parameters": {"weight": 1.0}}])  # fmt: skip
    out = merge(r, tmp_path / "u").out
    tok, ta, tb = load_tokenizer(out), load_tokenizer(a), load_tokenizer(b)
    config = json.loads((out / "config.json").read_text())
    assert len(tok) == config["vocab_size"] == len(ta) + 3  # x, y, z appended after a's tokens
    got, wa, wb = tensors(out), tensors(a), tensors(b)
    emb = "model.embed_tokens.weight"

    def row(w, t, ch):
        return w[emb][t.convert_tokens_to_ids(ch)]

    # A token both have: the mean of both rows. Only in a: a's row. Only in b: b's row.
    assert torch.allclose(row(got, tok, "a"), (row(wa, ta, "a") + row(wb, tb, "a")) / 2)
    assert torch.equal(row(got, tok, "e"), row(wa, ta, "e"))
    assert torch.equal(row(got, tok, "x"), row(wb, tb, "x"))
    assert tok("xa")["input_ids"][1:] == [tok.convert_tokens_to_ids("x"), tok.convert_tokens_to_ids("a")]
    # Layers are merged as usual; the output loads and generates over the union vocabulary.
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(out).eval()
    ids = tok("xyz ab", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        x = model.generate(ids, max_new_tokens=5, do_sample=False, use_cache=True)
        y = model.generate(ids, max_new_tokens=5, do_sample=False, use_cache=False)
    assert torch.equal(x, y)
