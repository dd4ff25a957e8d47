"""``lmfuse moe train``: experts and routers fine-tuned together on tiny models (Trainer underneath)."""

import json
import threading

import pytest
import torch
from transformers import AutoModelForCausalLM

from lmfuse.cli import main
from lmfuse.errors import ConfigError
from lmfuse.graft.train import PadCollator, tokenize
from lmfuse.graft.train_state import TrainingInterrupted
from lmfuse.moe.build import build_moe
from lmfuse.moe.prompt import PromptRoutedMoE, load_model_and_tokenizer, prompt_features
from lmfuse.moe.recipe import BuildRecipe, ExpertSpec
from lmfuse.moe.train import MoETrainConfig, moe_train, parts
from lmfuse.testing import char_tokenizer

SYMBOLS = ("+", "-", "*")


def build(out, base, fts, **kw):
    specs = [ExpertSpec(str(e), [f"Q: 12{s}7= A:"]) for e, s in zip(fts, SYMBOLS, strict=True)]
    build_moe(BuildRecipe(base=str(base), experts=specs, **kw), out)
    return out


@pytest.fixture(scope="module")
def moe_dir(tmp_path_factory, llama_family):
    return build(tmp_path_factory.mktemp("train") / "moe", *llama_family)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "d.jsonl"
    rows = []
    for a in range(3, 15):
        for s, v in zip(SYMBOLS, (a + 2, a - 2, a * 2), strict=True):
            rows.append({"prompt": f"Q: {a}{s}2= A:", "completion": f" {v}"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def weights(directory):
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
    return model, {n: p.detach().clone() for n, p in model.named_parameters()}


def config(**kw):
    return MoETrainConfig(**{"steps": 3, "lr": 1e-2, "batch_size": 4, "log_every": 1, **kw})


def test_experts_and_routers_train_frozen_parts_stay_bit_identical(moe_dir, data, tmp_path):
    model, before = weights(moe_dir)
    result = moe_train(str(moe_dir), [data], tmp_path / "o", config(freeze=["attention", "embeddings"]))
    _, after = weights(tmp_path / "o")
    part = parts(model)
    changed = {part[n] for n in before if not torch.equal(before[n], after[n])}
    assert changed == {"experts", "routers"}
    assert {part[n] for n in before} == {"attention", "embeddings", "experts", "routers"}
    assert len(result.losses) == 3 and (tmp_path / "o" / "lmfuse_moe_train.yaml").is_file()
    saved = json.loads((tmp_path / "o" / "config.json").read_text())
    assert saved["output_router_logits"] is False and saved["router_aux_loss_coef"] == 0.01
    assert json.loads((tmp_path / "o" / "lmfuse_provenance.json").read_text())["method"] == "moe train"


def test_the_balance_loss_is_in_the_loss(moe_dir, data, tmp_path):
    """Routers alone, trained with a large balance weight, end more balanced than with none."""

    def aux_after(coef, out):
        moe_train(str(moe_dir), [data], out, config(steps=8, lr=5e-2, freeze=["attention", "embeddings", "experts"],
                                                   router_aux_loss_coef=coef))  # fmt: skip
        model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
        tok = char_tokenizer()
        batch = PadCollator(tok.pad_token_id)(
            tokenize([f"Q: {a}+2= A: {a + 2}" for a in range(20)], tok, 64, False)
        )
        with torch.no_grad():
            return model(**batch, output_router_logits=True).aux_loss.item()

    assert aux_after(5.0, tmp_path / "bal") < aux_after(0.0, tmp_path / "free")


def test_prompt_and_completion_records_learn_the_completion_only():
    tok = char_tokenizer()
    ((ids, n),) = tokenize([("Q: 1+2= A:", " 3")], tok, 64, False)
    batch = PadCollator(tok.pad_token_id)([(ids, n), (ids[:4], 0)])
    assert n == len(tok("Q: 1+2= A:")["input_ids"])
    assert (batch["labels"][0, :n] == -100).all() and (batch["labels"][0, n:] != -100).all()
    assert (batch["labels"][1, :4] != -100).all() and (batch["labels"][1, 4:] == -100).all()


def test_a_prompt_routed_model_trains_only_the_expert_its_prompts_are_routed_to(tmp_path, llama_family, data):
    src = build(tmp_path / "p", *llama_family, routing="prompt", num_experts_per_tok=1)
    prm, tok = load_model_and_tokenizer(src, dtype="float32")
    prompts = [json.loads(line)["prompt"] for line in data.read_text().splitlines()]
    tok.padding_side = "left"
    enc = tok(prompts, return_tensors="pt", padding=True)
    g = prompt_features(prm.model, enc["input_ids"], enc["attention_mask"]).mean(0)
    prm.weight = torch.stack([-g, g, -g])  # every one of these prompts goes to expert 1
    assert (prm.route(enc["input_ids"], enc["attention_mask"]).indices == 1).all()
    prm.save_pretrained(tmp_path / "to1")
    tok.save_pretrained(tmp_path / "to1")
    moe_train(
        str(tmp_path / "to1"), [data], tmp_path / "o", config(steps=2, freeze=["attention", "embeddings"])
    )
    _, before = weights(tmp_path / "to1")
    _, after = weights(tmp_path / "o")
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed and all(".experts." in n for n in changed)
    for n in changed:  # stacked (E, ...) expert tensors: only expert 1 moved
        assert not torch.equal(before[n][1], after[n][1])
        assert torch.equal(before[n][0], after[n][0]) and torch.equal(before[n][2], after[n][2])
    kept = PromptRoutedMoE.from_pretrained(tmp_path / "o").weight
    assert torch.equal(kept, prm.weight)  # the prompt router is carried over unchanged


def test_a_prompt_routed_model_needs_prompt_completion_records(tmp_path, llama_family):
    src = build(tmp_path / "p", *llama_family, routing="prompt", num_experts_per_tok=1)
    text = tmp_path / "d.txt"
    text.write_text("Q: 1+2= A: 3\n")
    with pytest.raises(ConfigError, match="routes by prompt"):
        moe_train(str(src), [text], tmp_path / "o", config(steps=1))
    assert not (tmp_path / "o").exists()


def test_stop_then_resume_finishes(moe_dir, data, tmp_path):
    out, stop = tmp_path / "o", threading.Event()
    stop.set()  # stops after the first step, with a checkpoint
    with pytest.raises(TrainingInterrupted):
        moe_train(str(moe_dir), [data], out, config(steps=3, freeze=["attention"]), stop=stop)
    result = moe_train(str(moe_dir), [data], out, config(steps=3, freeze=["attention"]), resume=True)
    assert [s for s, _ in result.losses][-1] == 3 and (out / "config.json").is_file()


def test_bad_settings_and_dense_models_are_refused(llama_family, data, tmp_path, capsys):
    base = str(llama_family[0])
    args = ["moe", "train", base, "--data", str(data), "--steps", "1", "--out", str(tmp_path / "o")]
    assert main(args) == 2
    assert "no mixture-of-experts blocks" in capsys.readouterr().err
    every = ["--freeze", "attention", "embeddings", "experts", "routers"]
    assert main([*args, *every, "--router-aux-loss-coef", "-1"]) == 2
    err = capsys.readouterr().err
    assert "nothing would train" in err and "router_aux_loss_coef" in err
    assert not (tmp_path / "o").exists()


def test_cli_trains_and_prints(moe_dir, data, tmp_path, capsys):
    args = ["moe", "train", str(moe_dir), "--data", str(data), "--steps", "2", "--batch-size", "4",
            "--out", str(tmp_path / "o"), "--freeze", "attention"]  # fmt: skip
    assert main(args) == 0
    assert "2 steps on 36 examples" in capsys.readouterr().out
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "o") is not None


def test_prompt_completion_records_cannot_be_packed():
    with pytest.raises(ConfigError, match="cannot be packed"):
        tokenize([("Q: 1+2= A:", " 3")], char_tokenizer(), 8, packing=True)
