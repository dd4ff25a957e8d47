"""Prompt-level routing: invariants on tiny models and on the zoo, training, the checkpoint on disk, the CLI."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from lmfuse import zoo
from lmfuse.cli import main
from lmfuse.moe.build import build_moe
from lmfuse.moe.data import Example
from lmfuse.moe.prompt import (
    ROUTER_CONFIG,
    PromptRoutedMoE,
    PromptRouting,
    is_prompt_routed,
    load_model_and_tokenizer,
    prompt_features,
)
from lmfuse.moe.recipe import BuildRecipe, ExpertSpec
from lmfuse.moe.train_prompt_router import train_prompt_router
from lmfuse.moe.train_router import TrainRouterConfig

SYMBOLS = ("+", "-", "*")
HAVE_ZOO = all((zoo.ROOT / n / "config.json").is_file() for n in ("base", *zoo.SPECIALISTS))


def recipe(base, experts, **kw) -> BuildRecipe:
    specs = [
        ExpertSpec(str(e), [f"Q: 12{s}7= A:", f"Q: 3{s}4= A:"]) for e, s in zip(experts, SYMBOLS, strict=True)
    ]
    return BuildRecipe(base=str(base), experts=specs, routing="prompt", **kw)


@pytest.fixture(scope="module")
def prompt_moe(tmp_path_factory, llama_family):
    base, fts = llama_family
    out = tmp_path_factory.mktemp("prompt") / "moe"
    build_moe(recipe(base, fts, num_experts_per_tok=1), out)
    return out


def encode(tok, prompts):
    tok.padding_side = "left"
    return tok(prompts, return_tensors="pt", padding=True)


PROMPTS = ["Q: 12+7= A:", "Q: 5-3= A:", "Q: 41*9= A:"]


def test_a_prompt_routed_to_expert_x_is_expert_x(prompt_moe, llama_family):
    model, tok = load_model_and_tokenizer(prompt_moe, dtype="float32")
    enc = encode(tok, PROMPTS)
    for e, ft in enumerate(llama_family[1]):
        dense = AutoModelForCausalLM.from_pretrained(ft, dtype=torch.float32).eval()
        with torch.no_grad():
            got = model(**enc, routing=PromptRouting.one_hot(e, 3)).logits
            want = dense(**enc).logits
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_generation_equals_with_and_without_cache_and_routing_stays_the_prompts(prompt_moe):
    model, tok = load_model_and_tokenizer(prompt_moe, dtype="float32")
    enc = encode(tok, PROMPTS)
    kw = {"max_new_tokens": 8, "do_sample": False, "pad_token_id": tok.pad_token_id}
    with_cache = model.generate(**enc, use_cache=True, **kw)
    without = model.generate(**enc, use_cache=False, **kw)
    assert torch.equal(with_cache, without) and with_cache.shape[1] > enc["input_ids"].shape[1]
    # the routing of prompt + generated tokens, forced to the prompt's, gives the logits generation used
    routing = model.route(enc["input_ids"], enc["attention_mask"])
    mask = torch.ones_like(with_cache)
    mask[:, : enc["input_ids"].shape[1]] = enc["attention_mask"]
    out = model(input_ids=with_cache, attention_mask=mask, routing=routing, output_router_logits=True)
    for layer in out.router_logits:  # (B·T, E): one distribution per sequence, at every position
        per_seq = layer.view(len(PROMPTS), -1, layer.shape[-1])
        assert torch.equal(per_seq, per_seq[:, :1].expand_as(per_seq))
    greedy = out.logits[:, enc["input_ids"].shape[1] - 1 : -1].argmax(-1)
    assert torch.equal(greedy, with_cache[:, enc["input_ids"].shape[1] :])


def test_beams_expand_the_prompt_routing(prompt_moe):
    model, tok = load_model_and_tokenizer(prompt_moe, dtype="float32")
    enc = encode(tok, PROMPTS[:2])
    out = model.generate(**enc, max_new_tokens=4, num_beams=2, num_return_sequences=2, do_sample=False)
    assert out.shape[0] == 4


def test_features_do_not_depend_on_padding_or_batch(prompt_moe):
    model, tok = load_model_and_tokenizer(prompt_moe, dtype="float32")
    enc = encode(tok, PROMPTS)
    batch = prompt_features(model.model, enc["input_ids"], enc["attention_mask"])
    for i, p in enumerate(PROMPTS):
        alone = encode(tok, [p])
        single = prompt_features(model.model, alone["input_ids"], alone["attention_mask"])
        torch.testing.assert_close(batch[i : i + 1], single, rtol=1e-5, atol=1e-5)


def test_identical_experts_reproduce_the_dense_model_whatever_the_prompt_router(tmp_path, llama_family):
    base = llama_family[0]
    build_moe(recipe(base, [base, base, base], num_experts_per_tok=2, router_init="random"), tmp_path / "m")
    model, tok = load_model_and_tokenizer(tmp_path / "m", dtype="float32")
    model.weight = torch.randn_like(model.weight)
    dense = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    enc = encode(tok, PROMPTS)
    with torch.no_grad():
        torch.testing.assert_close(model(**enc).logits, dense(**enc).logits, rtol=0, atol=1e-5)


def test_checkpoint_is_transformers_loadable_and_round_trips(prompt_moe, tmp_path):
    assert is_prompt_routed(prompt_moe) and (prompt_moe / ROUTER_CONFIG).is_file()
    plain = AutoModelForCausalLM.from_pretrained(
        prompt_moe
    )  # token-level gates, as transformers alone sees it
    assert type(plain).__name__ == "MixtralForCausalLM"
    model, _ = load_model_and_tokenizer(prompt_moe, dtype="float32")
    model.weight = torch.randn_like(model.weight)
    model.save_pretrained(tmp_path / "again")
    again = PromptRoutedMoE.from_pretrained(tmp_path / "again")
    assert torch.equal(again.weight, model.weight) and again.num_experts_per_tok == 1


def completions_by(expert_dir, tok, prompts):
    dense = AutoModelForCausalLM.from_pretrained(expert_dir, dtype=torch.float32).eval()
    enc = encode(tok, prompts)
    out = dense.generate(**enc, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
    return tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)


def test_training_routes_each_prompt_kind_to_the_expert_that_wrote_its_completions(prompt_moe, llama_family):
    model, tok = load_model_and_tokenizer(prompt_moe, dtype="float32")
    model.weight = torch.zeros_like(model.weight)  # uniform: the data alone must teach the router
    examples = []
    for e, sym in enumerate(SYMBOLS):
        prompts = [f"Q: {a}{sym}{b}= A:" for a, b in zip(range(10, 22), range(2, 14), strict=True)]
        for p, c in zip(prompts, completions_by(llama_family[1][e], tok, prompts), strict=True):
            examples.append(Example(p + c, str(e), prompt=p))
    result = train_prompt_router(model, tok, examples, TrainRouterConfig(steps=30))
    assert result.losses[-1] < result.losses[0]
    enc = encode(tok, [ex.prompt for ex in examples])
    picked = model.route(enc["input_ids"], enc["attention_mask"]).indices[:, 0]
    wanted = torch.tensor([int(ex.category) for ex in examples])
    assert (picked == wanted).float().mean() >= 0.9


def test_training_needs_prompts(prompt_moe):
    model, tok = load_model_and_tokenizer(prompt_moe, dtype="float32")
    with pytest.raises(ValueError, match="prompt \\+ completion"):
        train_prompt_router(model, tok, [Example("Q: 1+2= A: 3")])


def test_cli_train_router_on_a_prompt_routed_model_and_zoo_eval(prompt_moe, tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    rows = [{"prompt": f"Q: {a}{s}3= A:", "completion": f" {a}"} for a in range(5, 11) for s in SYMBOLS]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "trained"
    before = PromptRoutedMoE.from_pretrained(prompt_moe).weight
    assert (
        main(["moe", "train-router", str(prompt_moe), "--data", str(data), "--out", str(out), "--steps", "5"])
        == 0
    )
    assert "prompt-router parameters" in capsys.readouterr().out
    after = PromptRoutedMoE.from_pretrained(out)
    assert not torch.equal(after.weight, before)
    assert main(["zoo", "eval", str(out), "--per-op", "2"]) == 0
    assert "all=" in capsys.readouterr().out


def test_cli_prompt_routing_refuses_text_only_data(prompt_moe, tmp_path, capsys):
    data = tmp_path / "d.txt"
    data.write_text("Q: 1+2= A: 3\n")
    args = ["moe", "train-router", str(prompt_moe), "--data", str(data), "--out", str(tmp_path / "o")]
    assert main(args) == 2
    assert "prompt + completion" in capsys.readouterr().err


@pytest.mark.skipif(not HAVE_ZOO, reason="zoo weights not present")
def test_on_the_zoo_a_prompt_routed_to_a_specialist_is_that_specialist(tmp_path):
    specs = [ExpertSpec(str(zoo.path(op)), ["Q: 1+2= A:"]) for op in zoo.SPECIALISTS]
    r = BuildRecipe(base=str(zoo.path("base")), experts=specs, routing="prompt", num_experts_per_tok=1)
    build_moe(r, tmp_path / "moe")
    model, tok = load_model_and_tokenizer(tmp_path / "moe", dtype="float32")
    enc = tok([q.prompt for q in zoo.eval_set(4)], return_tensors="pt", padding=True)
    for e, op in enumerate(zoo.SPECIALISTS):
        specialist, _ = zoo.load(op)
        with torch.no_grad():
            got = model(**enc, routing=PromptRouting.one_hot(e, 3)).logits
            torch.testing.assert_close(got, specialist(**enc).logits, rtol=0, atol=1e-5)


@pytest.mark.parametrize("shared", ["base", "average"])
def test_built_router_is_the_contrast_of_the_moes_own_prompt_features(tmp_path, llama_family, shared):
    from lmfuse.moe.router_init import prompt_rows

    base, fts = llama_family
    r = recipe(base, fts, num_experts_per_tok=1, shared_weights=shared)
    build_moe(r, tmp_path / "m")
    model, tok = load_model_and_tokenizer(tmp_path / "m", dtype="float32")
    tok.padding_side = "left"
    pos = [e.positive_prompts for e in r.experts]
    want = prompt_rows(model.model, tok, pos, [[] for _ in pos], r.router_scale)
    torch.testing.assert_close(model.weight, want, rtol=1e-4, atol=1e-5)


def test_inspect_reports_the_prompt_decisions_in_every_layer(prompt_moe, tmp_path):
    from lmfuse.moe.inspect import inspect_routing

    model, tok = load_model_and_tokenizer(prompt_moe, dtype="float32")
    examples = [Example(p + " 1", str(i), prompt=p) for i, p in enumerate(PROMPTS)]
    enc = encode(tok, PROMPTS)
    decided = model.route(enc["input_ids"], enc["attention_mask"]).indices[:, 0].tolist()
    result = inspect_routing(model, tok, examples)
    assert all(row == result.shares[0] for row in result.shares)
    assert result.winners() == {str(i): [e] * len(result.shares) for i, e in enumerate(decided)}
