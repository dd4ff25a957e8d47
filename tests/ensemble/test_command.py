"""``lmfuse ensemble`` end to end on tiny models saved to disk."""

from __future__ import annotations

import json

import pytest

from lmfuse.cli import main
from lmfuse.ensemble import Ensemble
from lmfuse.testing import bpe_tokenizer, char_tokenizer, save_tiny


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("members")
    return {
        "a": str(save_tiny(root / "a", "llama", char_tokenizer(), seed=1)),
        "b": str(save_tiny(root / "b", "mistral", char_tokenizer(), seed=2)),
        "c": str(save_tiny(root / "c", "qwen2", bpe_tokenizer(), seed=3)),
    }


def test_prompt_prints_the_api_result(dirs, capsys):
    argv = [
        "ensemble",
        "--model",
        dirs["a"],
        "--model",
        dirs["b"],
        "--weight",
        "0.7",
        "--weight",
        "0.3",
        "--combine",
        "logprob",
        "--prompt",
        "Q: 1+2= A:",
        "--prompt",
        "hi",
        "--max-new-tokens",
        "8",
    ]
    assert main(argv) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    ens = Ensemble([dirs["a"], dirs["b"]], weights=[0.7, 0.3], combine="logprob", dtype="float32")
    expected = ens.generate(["Q: 1+2= A:", "hi"], max_new_tokens=8)
    assert rows == [
        {"prompt": "Q: 1+2= A:", "completion": expected[0]},
        {"prompt": "hi", "completion": expected[1]},
    ]
    assert main(argv[:-4] + ["--max-new-tokens", "8"]) == 0  # one prompt: the completion as plain text
    assert capsys.readouterr().out == expected[0] + "\n"


def test_input_file_to_output_file_cross_tokenizer(dirs, tmp_path, capsys):
    src = tmp_path / "prompts.jsonl"
    src.write_text('{"prompt": "Q: 3+4= A:", "id": 1}\n\n{"prompt": "hello", "id": 2}\n')
    out = tmp_path / "out" / "completions.jsonl"
    argv = [
        "ensemble",
        "--model",
        dirs["a"],
        "--model",
        dirs["c"],
        "--input",
        str(src),
        "-o",
        str(out),
        "--max-new-tokens",
        "6",
        "--report",
        "--gate",
        "0.5",
        "--combine-device",
        "cpu",
    ]
    assert main(argv) == 0
    captured = capsys.readouterr()
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == [1, 2] and all(isinstance(r["completion"], str) for r in rows)
    assert "byte alignment" in captured.err and "ensembled" in captured.err
    assert "wrote 2 completions" in captured.out


def test_bad_input_lines_are_all_reported(dirs, tmp_path, capsys):
    src = tmp_path / "bad.jsonl"
    src.write_text('{"prompt": "ok"}\nnot json\n{"text": "x"}\n')
    argv = ["ensemble", "--model", dirs["a"], "--input", str(src), "-o", str(tmp_path / "o.jsonl")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl:2" in err and "bad.jsonl:3" in err and 'string "prompt"' in err
    assert not (tmp_path / "o.jsonl").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--weight", "1"], "one weight per member"),
        (["--combine", "prob", "--align", "ids"], "differ"),
        (["--device", "cpu"], "one per member"),
    ],
)
def test_user_errors_exit_2(dirs, capsys, extra, message):
    argv = ["ensemble", "--model", dirs["a"], "--model", dirs["c"], "--prompt", "x", *extra]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_missing_model_and_output_without_input(dirs, tmp_path, capsys):
    assert main(["ensemble", "--model", str(tmp_path / "nope"), "--prompt", "x"]) == 2
    assert "model not found" in capsys.readouterr().err
    assert main(["ensemble", "--model", dirs["a"], "--prompt", "x", "-o", str(tmp_path / "o.jsonl")]) == 2
    assert "goes with --input" in capsys.readouterr().err
