"""Remote members against a real ``lmfuse serve`` on 127.0.0.1: equal to the local ensemble when K
covers the vocabulary, speculative = plain, and a member that dies mid-generation."""

from __future__ import annotations

import pytest

from lmfuse.ensemble import Ensemble
from lmfuse.ensemble.remote import RemoteMemberError
from lmfuse.errors import ConfigError

PROMPTS = ["Q: 12+7= A:", "Q: 6*8= A:", "hi", "Q: 40-13= A:"]
NEW = 12
FULL = 5000
"""K above every zoo vocabulary: the remote distributions are exact."""


def serve_config(names: list[str]) -> dict:
    return {
        "server": {"max_logprobs": FULL},
        "backends": {n: {"kind": "hf", "model": f"zoo:{n}"} for n in names},
        "models": {n: {"method": "single", "backend": n} for n in names},
    }


@pytest.fixture(scope="module")
def url():
    from lmfuse.serve.testing import start_server

    with start_server(serve_config(["base", "add", "generalist"])) as base_url:
        yield base_url


def remote(url: str, name: str, **kw) -> dict:
    return {"base_url": url, "model": name, "tokenizer": f"zoo:{name}", "logprobs": FULL, **kw}


@pytest.fixture(scope="module")
def local_texts():
    return {
        names: Ensemble([f"zoo:{n}" for n in names]).generate(PROMPTS, max_new_tokens=NEW)
        for names in (("base", "add"), ("base", "generalist"), ("generalist", "base"))
    }


@pytest.mark.parametrize("names", [("base", "add"), ("base", "generalist")], ids=["shared", "bytes"])
def test_remote_equals_local_when_k_covers_the_vocabulary(url, local_texts, names):
    ens = Ensemble([remote(url, n) for n in names])
    assert ens.shared_vocab == (names == ("base", "add"))
    assert ens.generate(PROMPTS, max_new_tokens=NEW) == local_texts[names]


def test_one_call_per_step_and_member_also_where_a_member_generates_eos(url, local_texts):
    """The server reports a generated EOS with its logprob (as vLLM does): no call asks again."""
    ens = Ensemble([remote(url, "base"), remote(url, "add")])
    for prompt, want in zip(PROMPTS, local_texts[("base", "add")], strict=True):
        assert ens.generate([prompt], max_new_tokens=NEW) == [want]
        assert [m.calls for m in ens.members] == [ens.stats.steps] * 2
        for m in ens.members:
            m.calls = 0


def test_mixed_local_and_remote_members(url, local_texts):
    ens = Ensemble(["zoo:base", remote(url, "add")])
    assert ens.generate(PROMPTS, max_new_tokens=NEW) == local_texts[("base", "add")]


@pytest.mark.parametrize("k", range(1, 7))
def test_remote_speculation_equals_plain(url, local_texts, k):
    ens = Ensemble([remote(url, "base"), remote(url, "add")], speculate=k)
    assert ens.generate(PROMPTS, max_new_tokens=NEW) == local_texts[("base", "add")]
    calls = [m.calls for m in ens.members]
    # one call per round for each member, all rows in one call
    assert calls[1] <= ens.stats.speculations / len(PROMPTS) * 2 + 2


def test_top_k_truncation_stays_close(url, local_texts):
    ens = Ensemble([remote(url, "base", logprobs=5), remote(url, "add", logprobs=5)])
    assert ens.generate(PROMPTS, max_new_tokens=NEW) == local_texts[("base", "add")]  # zoo: confident


def test_member_that_dies_mid_generation(local_texts):
    from lmfuse.serve.testing import start_server

    with start_server(serve_config(["base"])) as lead_url:
        for policy in ("error", "drop"):
            with start_server(serve_config(["add"])) as doomed:
                ens = Ensemble(
                    [
                        remote(lead_url, "base"),
                        remote(doomed, "add", on_failure=policy, max_retries=1, backoff=0.01),
                    ]
                )
                chunks = ens.stream(PROMPTS[0], max_new_tokens=NEW)
                head = "".join(next(chunks).text for _ in range(3))
                assert local_texts[("base", "add")][0].startswith(head)  # the ensemble, so far
            # the server is gone: the next step fails
            if policy == "error":
                with pytest.raises(RemoteMemberError, match="add@.*failed after 2 attempt"):
                    list(chunks)
                continue
            rest = list(chunks)  # the lead goes on alone
            assert rest and rest[-1].finish_reason in ("stop", "length")
            assert list(ens.stats.dropped) == [ens.members[1].name]
            assert "failed after 2 attempt" in ens.stats.dropped[ens.members[1].name]


def test_remote_config_problems_all_at_once():
    with pytest.raises(ConfigError) as e:
        Ensemble([{"base_url": "http://127.0.0.1:9/v1", "logprobs": 0, "on_failure": "retry", "colour": 1}])
    msg = str(e.value)
    for part in ("'model'", "'tokenizer'", "on_failure", "logprobs", "colour"):
        assert part in msg
    with pytest.raises(ConfigError, match="lead member"):
        Ensemble([remote("http://127.0.0.1:9/v1", "base", on_failure="drop"), "zoo:add"])


def test_cli_remote_members_and_members_file(url, local_texts, tmp_path, capsys):
    from lmfuse.cli import main

    want = local_texts[("base", "add")][0]
    argv = ["ensemble", "--prompt", PROMPTS[0], "--max-new-tokens", str(NEW), "--logprobs", str(FULL)]
    assert main([*argv, "--model", f"{url}#base", "--tokenizer", "zoo:base", "--model", "zoo:add"]) == 0
    assert capsys.readouterr().out == want + "\n"
    cfg = tmp_path / "members.yaml"
    cfg.write_text(f"members:\n  - {{base_url: '{url}', model: base, tokenizer: 'zoo:base'}}\n  - zoo:add\n")
    assert main([*argv, "--members", str(cfg), "--speculate", "4", "--report"]) == 0
    out = capsys.readouterr()
    assert out.out == want + "\n" and "mean accepted length" in out.err
    assert main([*argv, "--model", f"{url}", "--model", "zoo:add"]) == 2
    err = capsys.readouterr().err
    assert "--tokenizer: expected one per http:// --model (1), found 0" in err and "#MODEL_NAME" in err


def test_remote_speculative_sampling_equals_local_with_the_same_seed(url):
    opts = dict(max_new_tokens=NEW, temperature=1.0, top_k=5, seed=4)
    local = Ensemble(["zoo:base", "zoo:add"], speculate=3).generate(PROMPTS, **opts)
    ens = Ensemble([remote(url, "base"), remote(url, "add")], speculate=3)
    assert ens.generate(PROMPTS, **opts) == local
    assert ens.stats.mean_accepted > 1.0


@pytest.mark.parametrize("k", range(1, 7))
def test_remote_byte_aligned_speculation_equals_plain(url, local_texts, k):
    want = local_texts[("base", "generalist")]
    ens = Ensemble([remote(url, "base"), remote(url, "generalist")], speculate=k)
    assert not ens.shared_vocab
    assert ens.generate(PROMPTS, max_new_tokens=NEW) == want
    # the verifier: one echo call per round for all rows (every round has a live row)
    assert ens.members[1].calls <= ens.stats.speculations
    mixed = Ensemble(["zoo:generalist", remote(url, "base")], speculate=k)
    assert mixed.generate(PROMPTS, max_new_tokens=NEW) == local_texts[("generalist", "base")]


def test_remote_byte_aligned_speculative_sampling_equals_local_with_the_same_seed(url):
    opts = dict(max_new_tokens=NEW, temperature=1.0, top_k=5, seed=4, ignore_eos=True)  # longer texts
    local = Ensemble(["zoo:base", "zoo:generalist"], speculate=3).generate(PROMPTS, **opts)
    ens = Ensemble([remote(url, "base"), remote(url, "generalist")], speculate=3)
    assert ens.generate(PROMPTS, **opts) == local
    assert ens.stats.mean_accepted > 1.0
