"""``lmfuse moe build | train-router | inspect`` end to end on tiny models, in-process."""

import json

import pytest
import torch
from safetensors.torch import load_file

from lmfuse.cli import main

OPS = {"add": "+", "mul": "*", "sub": "-"}


def write_recipe(path, base, experts, **extra):
    lines = [f"base: {base}", "num_experts_per_tok: 2"]
    lines += [f"{k}: {v}" for k, v in extra.items()]
    lines.append("experts:")
    for sym, e in zip(OPS.values(), experts, strict=False):
        lines += [
            f"  - source: {e}",
            "    positive_prompts:",
            f'      - "Q: 12{sym}7= A:"',
            f'      - "Q: 3{sym}4= A:"',
        ]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_data(path):
    rows = []
    for i in range(12):
        for op, sym in OPS.items():
            a, b = 3 + i, 2 + i % 5
            value = {"add": a + b, "mul": a * b, "sub": a - b}[op]
            rows.append(json.dumps({"text": f"Q: {a}{sym}{b}= A: {value}", "category": op}))
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory, llama_family):
    root = tmp_path_factory.mktemp("cli")
    base, fts = llama_family
    recipe = write_recipe(root / "recipe.yaml", base, fts)
    assert main(["moe", "build", str(recipe), str(root / "moe")]) == 0
    return root


def test_build_prints_total_and_active(tmp_path, llama_family, capsys):
    base, fts = llama_family
    recipe = write_recipe(tmp_path / "r.yaml", base, fts, router_init="embed")
    assert main(["moe", "build", str(recipe), str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "built mixtral with 3 experts (top-2)" in out
    assert "total parameters:" in out and "active parameters:" in out
    assert (tmp_path / "out" / "lmfuse_provenance.json").is_file()


def test_bad_recipe_exits_2_with_every_problem(tmp_path, capsys):
    (tmp_path / "r.yaml").write_text("base: nowhere\nexperts: []\nrouter_init: hiden\n")
    assert main(["moe", "build", str(tmp_path / "r.yaml"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "router_init" in err and "'hidden'" in err and "hiden" in err
    assert not (tmp_path / "out").exists()


def test_train_router_changes_only_the_routers(built, tmp_path, capsys):
    data = write_data(tmp_path / "data.jsonl")
    out = tmp_path / "trained"
    args = ["moe", "train-router", str(built / "moe"), "--data", str(data), "--out", str(out), "--steps", "8"]
    assert main(args + ["--batch-size", "8"]) == 0
    text = capsys.readouterr().out
    assert "router parameters" in text and "loss" in text
    before, after = load_file(built / "moe" / "model.safetensors"), load_file(out / "model.safetensors")
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed and all(n.endswith("block_sparse_moe.gate.weight") for n in changed)
    assert len(changed) == 2  # both layers' routers moved
    # issue 15 item 20: the run leaves its loss log, settings and provenance beside the model
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(1, 9)) and all(r["loss"] > 0 for r in log)
    assert "steps: 8" in (out / "lmfuse_train_router.yaml").read_text()
    assert json.loads((out / "lmfuse_provenance.json").read_text())["method"] == "moe train-router"


def test_train_router_refuses_a_dense_model(llama_family, tmp_path, capsys):
    base, _ = llama_family
    data = write_data(tmp_path / "data.jsonl")
    assert main(["moe", "train-router", str(base), "--data", str(data), "--out", str(tmp_path / "o")]) == 2
    assert "no mixture-of-experts blocks" in capsys.readouterr().err


def test_inspect_prints_shares_winners_and_plots(built, tmp_path, capsys):
    data = write_data(tmp_path / "data.jsonl")
    plot = tmp_path / "load.png"
    assert main(["moe", "inspect", str(built / "moe"), "--data", str(data), "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert "share of routed tokens per expert" in out and "winning expert per category" in out
    assert plot.is_file() and plot.stat().st_size > 1000
    rows = [line.split() for line in out.splitlines() if line.strip().startswith(("0 ", "1 "))]
    for row in rows[:2]:
        assert sum(float(v) for v in row[1:]) == pytest.approx(1.0, abs=0.01)


def test_bad_data_line_is_named(built, tmp_path, capsys):
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"txt": 1}\n')
    assert main(["moe", "inspect", str(built / "moe"), "--data", str(tmp_path / "bad.jsonl")]) == 2
    assert "bad.jsonl:2" in capsys.readouterr().err


def test_prompt_completion_records_learn_the_completion_only(tmp_path):
    from lmfuse.moe.data import read_examples
    from lmfuse.moe.train_router import _batch
    from lmfuse.testing import char_tokenizer

    (tmp_path / "d.jsonl").write_text('{"prompt": "Q: 1+2= A:", "completion": " 3", "category": "add"}\n')
    (example,) = read_examples(tmp_path / "d.jsonl")
    assert example.text == "Q: 1+2= A: 3" and example.prompt == "Q: 1+2= A:" and example.category == "add"
    tok = char_tokenizer()
    tok.padding_side = "right"
    batch, labels = _batch(tok, [example], tok.eos_token)
    learned = labels[0][labels[0] != -100].tolist()
    assert tok.decode(learned) == " 3<eos>"
