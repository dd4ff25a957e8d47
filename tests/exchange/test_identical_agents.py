"""Issue 16, item 3: agents on one model at temperature 0 no longer get byte-identical first prompts,
and agents that would still be identical are warned about."""

from __future__ import annotations

from lmfuse.core.config import from_dict
from lmfuse.exchange.config import EoTConfig, MoAConfig
from lmfuse.exchange.diversity import DEFAULT_PERSONAS
from lmfuse.exchange.eot import EoT
from lmfuse.exchange.moa import MoA


def eot(agents: list[dict], **rules) -> EoT:
    replies = {a["name"]: f"the answer is {i}" for i, a in enumerate(agents)}
    backends = {"s": {"kind": "scripted", "replies": replies}, "t": {"kind": "scripted", "replies": replies}}
    return EoT(from_dict(EoTConfig, {"backends": backends, "agents": agents, **rules}))


def test_chat_agents_without_a_persona_get_distinct_default_personas():
    solver = eot([{"name": n, "backend": "s"} for n in "ABC"], max_rounds=1)
    r = solver.run("What is 2+2?")
    first = [t.prompt for t in r.turns if t.round == 0]
    assert len(set(first)) == 3  # was: three byte-identical prompts
    for persona, prompt in zip(DEFAULT_PERSONAS, first, strict=False):
        assert prompt.startswith(f"[system]\n{persona}")
    assert solver.warnings == []


def test_given_personas_are_kept_and_default_personas_can_be_turned_off():
    solver = eot([{"name": "A", "backend": "s", "system": "Mine."}, {"name": "B", "backend": "s"}])
    r = solver.run("Q")
    assert r.turns[0].prompt.startswith("[system]\nMine.") and DEFAULT_PERSONAS[1] in r.turns[1].prompt
    off = eot([{"name": n, "backend": "s"} for n in "AB"], default_personas=False)
    assert off.run("Q").turns[0].prompt == off.run("Q").turns[1].prompt
    assert len(off.warnings) == 1
    assert "A, B" in off.warnings[0] and "temperature 0" in off.warnings[0]


def test_warning_names_each_group_of_identical_agents_and_only_those():
    agents = [
        {"name": "A", "backend": "s", "prompt_format": "qa_lines"},
        {"name": "B", "backend": "s", "prompt_format": "qa_lines"},
        {"name": "C", "backend": "t", "prompt_format": "qa_lines"},  # another backend
        {"name": "D", "backend": "s", "prompt_format": "qa_lines", "temperature": 0.7},  # sampled
        {"name": "E", "backend": "s", "prompt_format": "qa_lines"},
    ]
    w = eot(agents).warnings
    assert len(w) == 1 and w[0].startswith("agents A, B, E ")


def test_moa_warns_about_identical_proposers_in_a_layer():
    replies = {"p": "1", "q": "2", "agg": "3"}
    data = {
        "backends": {"s": {"kind": "scripted", "replies": replies}},
        "layers": [
            [{"name": "p", "backend": "s", "system": "S"}, {"name": "q", "backend": "s", "system": "S"}]
        ],
        "aggregator": {"name": "agg", "backend": "s"},
    }
    assert len(MoA(from_dict(MoAConfig, data)).warnings) == 1
    data["layers"][0][1]["system"] = "T"
    assert MoA(from_dict(MoAConfig, data)).warnings == []


def test_cli_prints_the_identical_agents_warning(tmp_path, capsys):
    import json

    from lmfuse.cli import main

    (tmp_path / "eot.yaml").write_text(
        "backends: {s: {kind: scripted, replies: {A: 'the answer is 4', B: 'the answer is 4'}}}\n"
        "agents: [{name: A, backend: s}, {name: B, backend: s}]\ndefault_personas: false\n"
    )
    (tmp_path / "q.jsonl").write_text(json.dumps({"id": "q1", "question": "2+2?"}) + "\n")
    args = ["exchange", "--config", str(tmp_path / "eot.yaml"), "--input", str(tmp_path / "q.jsonl")]
    assert main([*args, "-o", str(tmp_path / "o.jsonl"), "--no-progress"]) == 0
    assert "warning: agents A, B share backend 's'" in capsys.readouterr().err
