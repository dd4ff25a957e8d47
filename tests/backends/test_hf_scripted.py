"""The ``hf`` backend (batched, left-padded) and the ``scripted`` backend."""

from __future__ import annotations

import asyncio

import pytest

from lmfuse.backends import BackendConfig, build_backend
from lmfuse.backends.base import Request
from lmfuse.backends.hf import HFBackend
from lmfuse.backends.scripted import ScriptedBackend
from lmfuse.core.config import from_dict
from lmfuse.errors import ConfigError
from lmfuse.testing import char_tokenizer, tiny_model


@pytest.fixture(scope="module")
def hf():
    tok = char_tokenizer()
    return HFBackend(tiny_model("llama", vocab_size=len(tok), seed=7), tok, name="tiny")


def test_batched_generation_equals_one_at_a_time(hf):
    reqs = [
        Request(prompt=p, max_tokens=m)
        for p, m in [("Q: 1+1= A:", 5), ("a much longer prompt here", 3), ("x", 8)]
    ]
    batched = hf.generate_batch(reqs)
    alone = [hf.generate_batch([r])[0] for r in reqs]
    assert [b.text for b in batched] == [a.text for a in alone]
    assert [b.completion_tokens for b in batched] == [a.completion_tokens for a in alone]
    assert all(b.completion_tokens <= r.max_tokens for b, r in zip(batched, reqs, strict=True))
    assert [b.prompt_tokens for b in batched] == [len(hf.tokenizer(r.prompt)["input_ids"]) for r in reqs]


def test_concurrent_callers_are_batched_and_keep_their_order(hf):
    reqs = [Request(prompt=f"Q: {i}*3= A:", max_tokens=4) for i in range(12)]
    expected = [r.text for r in hf.generate_batch(reqs)]
    before = hf.batches

    async def go():
        return await asyncio.gather(*(hf.generate([r]) for r in reqs))

    out = asyncio.run(go())
    assert [o[0].text for o in out] == expected
    assert hf.batches - before == 1


def test_chat_rendering_and_stop_strings(hf):
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    assert hf.render(Request(messages=msgs)) == "S\nU"  # char tokenizer: no chat template
    full = hf.generate_batch([Request(prompt="Q: 5+5= A:", max_tokens=8)])[0].text
    if len(full) > 2:
        cut = hf.generate_batch([Request(prompt="Q: 5+5= A:", max_tokens=8, stop=[full[2]])])[0].text
        assert cut == full.split(full[2], 1)[0]


def test_scripted_table_lookup_and_failures():
    b = ScriptedBackend({"q2": {"A": ["x2"]}, "A": ["r0", "r1"], "B": "always", "C": ["!error boom"]})

    def ask(agent, rnd, qid="q1"):
        return asyncio.run(
            b.generate([Request(prompt="p", meta={"agent": agent, "round": rnd, "question_id": qid})])
        )[0]

    assert [ask("A", r).text for r in range(3)] == ["r0", "r1", "r1"]
    assert ask("A", 5, "q2").text == "x2" and ask("B", 9).text == "always"
    failed = ask("C", 0)
    assert not failed.ok and failed.error == "boom"
    with pytest.raises(ConfigError, match="no replies for agent 'Z'"):
        ask("Z", 0)


def test_backend_config_validation_and_build():
    with pytest.raises(ConfigError) as err:
        from_dict(BackendConfig, {"kind": "openai", "max_concurrency": 0, "replies": {}})
    text = str(err.value)
    assert "base_url: required" in text and "max_concurrency" in text and "only for kind scripted" in text
    with pytest.raises(ConfigError, match="expected one of 'openai', 'hf', 'scripted'"):
        from_dict(BackendConfig, {"kind": "vllm"})
    b = build_backend(from_dict(BackendConfig, {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}), "x")
    assert b.name == "x" and b.max_retries == 3


def test_usage_counts_the_generated_eos_and_finish_reason_says_why_it_stopped():
    from lmfuse import zoo

    backend = HFBackend(*zoo.load("add"), name="add")
    question = "Q: 12+7= A:"
    full, capped = backend.generate_batch(
        [Request(prompt=question, max_tokens=zoo.MAX_NEW_TOKENS), Request(prompt=question, max_tokens=2)]
    )
    assert full.text == " 2+7=9,1+0+0=1 so 19" and full.finish_reason == "stop"
    assert full.completion_tokens == len(full.text) + 1  # one token per character, then <eos>
    assert capped.text == " 2" and capped.finish_reason == "length" and capped.completion_tokens == 2
