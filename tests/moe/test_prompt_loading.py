"""A prompt-routed MoE checkpoint loaded through lmfuse's shared loaders is the prompt-routed model (the
``hf`` backend, so exchange, vote and ``lmfuse serve``), or is refused with a clear error where a path
cannot route by prompt (core's plain loader, the token-level ensemble); never silently the
transformers model with its token-level gates."""

import asyncio

import pytest
import torch

from lmfuse.backends import BackendConfig, build_backend
from lmfuse.backends.base import Request
from lmfuse.backends.hf import HFBackend
from lmfuse.core import loading
from lmfuse.errors import CheckpointError, IncompatibleModelsError
from lmfuse.moe.build import build_moe
from lmfuse.moe.prompt import ROUTER_CONFIG, PromptRoutedMoE
from lmfuse.moe.recipe import BuildRecipe, ExpertSpec

PROMPTS = ["Q: 12+7= A:", "Q: 5-3= A:", "Q: 41*9= A:", "Q: 3+4= A:"]
NEW = 12


@pytest.fixture(scope="module")
def prompt_moe(tmp_path_factory, llama_family):
    base, fts = llama_family
    specs = [ExpertSpec(str(e), [f"Q: 12{s}7= A:", f"Q: 3{s}4= A:"]) for e, s in zip(fts, "+-*", strict=True)]
    out = tmp_path_factory.mktemp("prompt-loading") / "moe"
    build_moe(BuildRecipe(base=str(base), experts=specs, routing="prompt", num_experts_per_tok=1), out)
    return out


def greedy_texts(model, tok, prompts: list[str]) -> list[str]:
    """Greedy continuations, one prompt at a time (no padding)."""
    out = []
    for p in prompts:
        ids = torch.tensor([tok(p)["input_ids"]])
        with torch.no_grad():
            gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW,
                                 do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)  # fmt: skip
        new = gen[0, ids.shape[1] :].tolist()
        if tok.eos_token_id in new:
            new = new[: new.index(tok.eos_token_id)]
        out.append(tok.decode(new, skip_special_tokens=True))
    return out


def backend_texts(backend: HFBackend, prompts: list[str], **kw) -> list:
    requests = [Request(prompt=p, max_tokens=NEW, temperature=0, **kw) for p in prompts]
    return asyncio.run(backend.generate(requests))


def test_hf_backend_serves_the_prompt_routed_model(prompt_moe):
    from transformers import AutoModelForCausalLM

    prm = PromptRoutedMoE.from_pretrained(prompt_moe, dtype="float32")
    tok = loading.load_tokenizer(prompt_moe)
    want = greedy_texts(prm, tok, PROMPTS)
    plain = AutoModelForCausalLM.from_pretrained(prompt_moe, dtype=torch.float32).eval()
    assert greedy_texts(plain, tok, PROMPTS) != want  # token-level gates are another model: the test can fail
    backend = build_backend(BackendConfig(kind="hf", model=str(prompt_moe)), "moe")
    assert isinstance(backend.model, PromptRoutedMoE)
    replies = backend_texts(backend, PROMPTS)  # one left-padded batch: routing follows each row's mask
    assert [r.text for r in replies] == want


def test_hf_backend_logprobs_score_with_the_prompts_routing(prompt_moe):
    backend = HFBackend(model_path=str(prompt_moe), dtype="float32")
    prm, tok = backend.model, backend.tokenizer
    (reply,) = backend_texts(backend, PROMPTS[:1], logprobs=0)
    prompt = tok(PROMPTS[0])["input_ids"]
    ids = torch.tensor([prompt + reply.logprobs.token_ids])
    routing = prm.route(torch.tensor([prompt]))
    with torch.no_grad():
        logp = torch.log_softmax(prm(ids, routing=routing).logits[0].float(), -1)
    want = [float(logp[len(prompt) + i - 1, t]) for i, t in enumerate(reply.logprobs.token_ids)]
    assert reply.logprobs.token_logprobs == pytest.approx(want, abs=1e-5)


def test_core_loader_refuses_instead_of_loading_token_level_gates(prompt_moe):
    with pytest.raises(CheckpointError) as err:
        loading.load_model(prompt_moe, dtype="float32")
    msg = str(err.value)
    assert ROUTER_CONFIG in msg and "PromptRoutedMoE" in msg and "hf" in msg
    plain = loading.load_model(
        prompt_moe, dtype="float32", plain=True
    )  # on purpose: the bare transformers model
    assert not isinstance(plain, PromptRoutedMoE)


def test_token_level_ensemble_refuses_a_prompt_routed_member(prompt_moe, llama_family):
    from lmfuse.ensemble.member import load_member

    with pytest.raises(CheckpointError, match=ROUTER_CONFIG):
        load_member(str(prompt_moe), dtype="float32")
    assert load_member(str(llama_family[0]), dtype="float32")  # a plain checkpoint still loads
    prm = PromptRoutedMoE.from_pretrained(prompt_moe, dtype="float32")
    with pytest.raises(IncompatibleModelsError, match="prompt-routed"):  # loaded in-process, passed as a pair
        load_member((prm, loading.load_tokenizer(prompt_moe)))


def test_core_knows_the_file_the_moe_writes():
    assert ROUTER_CONFIG in loading.COMPANION_FILES


def test_lmfuse_serve_answers_with_the_prompt_routed_model(prompt_moe):
    import httpx

    from lmfuse.serve.app import create_app
    from lmfuse.serve.build import build_models, server_options
    from lmfuse.serve.config import parse
    from lmfuse.serve.server import ServerThread

    prm = PromptRoutedMoE.from_pretrained(prompt_moe, dtype="float32")
    want = greedy_texts(prm, loading.load_tokenizer(prompt_moe), PROMPTS[:2])
    cfg = parse({"backends": {"moe": {"kind": "hf", "model": str(prompt_moe)}},
                 "models": {"moe": {"method": "single", "backend": "moe"}}})  # fmt: skip
    app = create_app(build_models(cfg), options=server_options(cfg))
    with ServerThread(app) as s, httpx.Client(base_url=s.base_url, timeout=60) as c:
        body = {"model": "moe", "max_tokens": NEW, "temperature": 0}
        got = [
            c.post("/completions", json={**body, "prompt": p}).json()["choices"][0]["text"]
            for p in PROMPTS[:2]
        ]
    assert got == want


def test_lmfuse_serve_refuses_a_prompt_routed_ensemble_member_before_serving(prompt_moe, tmp_path, capsys):
    from lmfuse.cli import main

    cfg = tmp_path / "serve.yaml"
    cfg.write_text(f"models:\n  ens: {{method: ensemble, members: ['{prompt_moe}']}}\n")
    assert main(["serve", "--config", str(cfg), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert ROUTER_CONFIG in err and "PromptRoutedMoE" in err and "Traceback" not in err
