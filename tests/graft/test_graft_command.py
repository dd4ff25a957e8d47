"""``lmfuse graft`` and ``lmfuse train`` from the command line (in-process), exit codes and outputs."""

from __future__ import annotations

import json

import pytest
from transformers import AutoModelForCausalLM

from lmfuse.cli import main
from lmfuse.graft.command import parse_size


def test_dus_dry_run_prints_plan_and_writes_nothing(tiny4, tmp_path, capsys):
    out, png = tmp_path / "out", tmp_path / "plan.png"
    assert main(["graft", "dus", str(tiny4), str(out), "--drop", "1", "--dry-run", "--plot", str(png)]) == 0
    text = capsys.readouterr().out
    assert "0-2" in text and "1-3" in text and "parameters" in text and "peak memory" in text
    assert not out.exists() and png.stat().st_size > 1000


def test_dus_writes_a_loadable_model(tiny4, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["graft", "dus", str(tiny4), str(out), "--drop", "1", "--max-shard-size", "50KB"]) == 0
    assert "6 layers" in capsys.readouterr().out
    assert len(list(out.glob("model-*.safetensors"))) > 1
    assert AutoModelForCausalLM.from_pretrained(out).config.num_hidden_layers == 6


def test_splice_and_run_recipe(tiny4, tiny4b, tmp_path):
    assert (
        main(
            ["graft", "splice", str(tiny4), str(tiny4b), str(tmp_path / "sp"), "--first", "2", "--last", "3"]
        )
        == 0
    )
    assert json.loads((tmp_path / "sp" / "config.json").read_text())["num_hidden_layers"] == 5
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"slices:\n  - {{model: {tiny4}, layers: [0, 4]}}\n  - {{model: {tiny4b}, layers: [3, 4]}}\n"
        f"head: {tiny4b}\ndtype: bfloat16\n"
    )
    assert main(["graft", "run", str(recipe), str(tmp_path / "run")]) == 0
    plan = json.loads((tmp_path / "run" / "graft_plan.json").read_text())
    assert plan["layers"][-1] == {"layer": 4, "model": str(tiny4b), "source_layer": 3}
    assert "dtype: bfloat16" in (tmp_path / "run" / "lmfuse_recipe.yaml").read_text()


def test_invalid_recipe_exits_2_with_every_problem(tiny4, tmp_path, capsys):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(
        f"slices:\n  - {{model: {tiny4}, layers: [0, 7]}}\n  - {{model: {tmp_path}/nope, layers: [0, 1]}}\n"
    )
    assert main(["graft", "run", str(recipe), str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "2 problems" in err and "out of range" in err and "nope" in err
    assert main(["graft", "dus", str(tiny4), str(tmp_path / "o"), "--drop", "4"]) == 2
    assert "--drop 4: expected 1 to 3" in capsys.readouterr().err  # in the flag's terms, not a slice
    assert main(["graft", "dus", str(tiny4), "--drop", "1"]) == 2  # no OUT without --dry-run
    assert not (tmp_path / "o").exists()


def test_parse_size():
    assert (
        parse_size("2GB") == 2 * 1024**3 and parse_size("500mb") == 500 * 1024**2 and parse_size("10") == 10
    )
    with pytest.raises(Exception, match="expected a size"):
        parse_size("lots")


def test_train_logs_loss_and_writes_model(tiny4, tmp_path, capsys):
    data = tmp_path / "d.txt"
    data.write_text("Q: 1+2= A: 3\nQ: 5+5= A: 10\nQ: 7-2= A: 5\nQ: 3*3= A: 9\n")
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text('{"text": "Q: 2+2= A: 4"}\n{"text": "Q: 9-1= A: 8"}\n')
    out = tmp_path / "trained"
    args = ["train", str(tiny4), "--data", str(data), str(jsonl), "--steps", "12", "--out", str(out)]
    assert main([*args, "--batch-size", "3", "--lr", "3e-3", "--log-every", "3", "--seq-len", "32"]) == 0
    assert "12 steps on 6 examples" in capsys.readouterr().out
    rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 3, 6, 9, 12]
    assert rows[-1]["loss"] < rows[0]["loss"]  # 12 steps over 6 repeated lines: the loss must fall
    assert AutoModelForCausalLM.from_pretrained(out) is not None
    assert not (out / "trainer").exists()


def test_train_bad_data_is_a_clear_error(tiny4, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"txt": "wrong field"}\n')
    assert main(["train", str(tiny4), "--data", str(bad), "--steps", "1", "--out", str(tmp_path / "o")]) == 2
    assert "bad.jsonl:2" in capsys.readouterr().err
    assert (
        main(
            [
                "train",
                str(tiny4),
                "--data",
                str(tmp_path / "none.txt"),
                "--steps",
                "0",
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert "steps: expected a positive integer" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
