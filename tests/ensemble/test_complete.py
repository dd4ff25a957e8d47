"""Contract B: ``Ensemble.complete`` / ``stream`` (what ``lmfuse serve`` returns) agree with ``generate``
and carry the combined distribution's log-probs."""

from __future__ import annotations

import pytest
import torch

from lmfuse.ensemble import Ensemble
from lmfuse.errors import ConfigError

from .conftest import PROMPTS, without_specials


@pytest.fixture(scope="module")
def shared(models, tok):
    return Ensemble([(models["llama"], tok), (models["qwen2"], tok)])


@pytest.fixture(scope="module")
def cross(models, tok, bpe):
    from lmfuse.testing import tiny_model

    bpe_model = without_specials(tiny_model("llama", vocab_size=len(bpe), seed=7), bpe)
    return Ensemble([(without_specials(models["llama"], tok), tok), (bpe_model, bpe)])


SAMPLED = dict(temperature=0.9, seed=3)


@pytest.mark.parametrize("which", ["shared", "cross"])
@pytest.mark.parametrize("opts", [{}, SAMPLED, dict(stop=["e", " t"]), dict(SAMPLED, stop=["a", "1"])])
def test_stream_equals_complete_equals_generate(request, which, opts):
    ens = request.getfixturevalue(which)
    want = ens.generate(PROMPTS, max_new_tokens=14, batch_size=1, **opts)
    done = ens.complete(PROMPTS, max_new_tokens=14, batch_size=1, logprobs=3, **opts)
    assert [c.text for c in done] == want
    for i, (prompt, c) in enumerate(zip(PROMPTS, done, strict=True)):
        seeded = dict(opts, seed=opts["seed"] + i) if "seed" in opts else opts  # complete: seed + row
        chunks = list(ens.stream(prompt, max_new_tokens=14, logprobs=3, **seeded))
        assert "".join(x.text for x in chunks) == c.text
        assert [x.logprob for x in chunks] == c.token_logprobs
        assert [x.finish_reason for x in chunks[:-1]] == [None] * (len(chunks) - 1)
        assert chunks[-1].finish_reason == c.finish_reason
        assert len(chunks) == c.completion_tokens == len(c.tokens) == len(c.top_logprobs)
        # byte alignment: the candidates (union of top-k) may be fewer than 3
        assert all(len(t) == 3 if which == "shared" else 1 <= len(t) <= 3 for t in c.top_logprobs)
        assert all(t[0][1] >= lp - 1e-6 for t, lp in zip(c.top_logprobs, c.token_logprobs, strict=True))
        assert c.prompt_tokens > 0


def test_batched_complete_equals_generate(shared):
    want = shared.generate(PROMPTS, max_new_tokens=10, **SAMPLED)
    assert [c.text for c in shared.complete(PROMPTS, max_new_tokens=10, **SAMPLED)] == want


def test_finish_reason_length_and_stop(shared, tok):
    free = shared.complete(PROMPTS[:1], max_new_tokens=8)[0]
    assert free.finish_reason == "length" and free.completion_tokens == 8
    stop = free.text[3:5]
    cut = shared.complete(PROMPTS[:1], max_new_tokens=8, stop=[stop])[0]
    assert cut.finish_reason == "stop" and cut.text == free.text[: free.text.index(stop)]
    assert cut.completion_tokens < 8


def test_eos_is_a_stop_and_counts_as_a_token(tok):
    from lmfuse.testing import tiny_model

    model = tiny_model("llama", vocab_size=len(tok), seed=11)
    with torch.no_grad():
        model.lm_head.weight[tok.eos_token_id] *= 2.5
    ens = Ensemble([(model, tok)] * 2)
    done = ens.complete(PROMPTS, max_new_tokens=20)
    ended = [c for c in done if c.finish_reason == "stop"]
    assert ended, "test needs a row that stops on EOS"
    for c in ended:
        assert c.tokens[-1] == tok.eos_token and c.completion_tokens < 20


def test_self_ensemble_logprobs_are_the_models_log_softmax(models, tok):
    model = models["mistral"]
    ens = Ensemble([(model, tok)] * 3)
    c = ens.complete(["hi there"], max_new_tokens=6, logprobs=5)[0]
    ids = tok(["hi there"], return_tensors="pt")["input_ids"]
    steps = [tok.convert_tokens_to_ids(t) if t in tok.get_vocab() else None for t in c.tokens]
    full = torch.cat([ids, torch.tensor([steps])], dim=1)
    with torch.no_grad():
        logp = torch.log_softmax(model(full).logits[0, ids.shape[1] - 1 : -1].float(), -1)
    want = logp.gather(-1, torch.tensor(steps)[:, None]).squeeze(-1)
    assert torch.allclose(torch.tensor(c.token_logprobs), want, atol=1e-5)
    top = torch.topk(logp, 5)
    for r, row in enumerate(c.top_logprobs):
        assert [tok.convert_tokens_to_ids(t) for t, _ in row] == top.indices[r].tolist()
        assert torch.allclose(torch.tensor([v for _, v in row]), top.values[r], atol=1e-5)


def test_chat_messages(models, tok):
    import copy

    chat_tok = copy.deepcopy(tok)
    chat_tok.chat_template = "{% for m in messages %}{{ m['role'][0] }}:{{ m['content'] }}\n{% endfor %}a:"
    ens = Ensemble([(models["llama"], chat_tok), (models["qwen2"], chat_tok)])
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    got = ens.complete([msgs], max_new_tokens=6, chat=True)[0]
    assert [got.text] == ens.generate([msgs], max_new_tokens=6, chat=True)
    assert got.prompt_tokens == len("s:be brief\nu:hi\na:")  # one char each, no BOS added
    assert ens.complete(["hi"], max_new_tokens=6, chat=True)[0].text == "".join(
        x.text for x in ens.stream([{"role": "user", "content": "hi"}], max_new_tokens=6, chat=True)
    )
    with pytest.raises(ConfigError, match="chat=True"):
        ens.complete([msgs], max_new_tokens=2)
