"""``lmfuse vote`` end to end: both input layouts, bad lines, --skip-bad, atomic output."""

import json
import os
import subprocess
import sys

import pytest

from lmfuse.cli import main
from lmfuse.errors import InputDataError
from lmfuse.vote.io import read_questions, write_jsonl_atomic


def _write(path, lines):
    path.write_text("".join((ln if isinstance(ln, str) else json.dumps(ln)) + "\n" for ln in lines))
    return path


def _read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_single_file_layout(tmp_path, capsys):
    inp = _write(
        tmp_path / "in.jsonl",
        [
            {
                "id": "a",
                "candidates": ["the cat sat", "the cat sat down", "a dog"],
                "sources": ["m1", "m2", "m3"],
            },
            "",
            {"id": 7, "candidates": ["中文字", "中文"]},
        ],
    )
    out = tmp_path / "out.jsonl"
    assert main(["vote", str(inp), "-o", str(out), "--no-progress"]) == 0
    rows = _read(out)
    assert [r["id"] for r in rows] == ["a", 7]
    assert rows[0]["winner"] == "the cat sat down" and rows[0]["index"] == 1 and rows[0]["source"] == "m2"
    assert len(rows[0]["scores"]) == 3 and rows[0]["tie"] is False
    assert rows[1]["tie"] is True and rows[1]["index"] == 0 and "source" not in rows[1]
    assert "voted 2 questions with char_rouge_l: 1 ties" in capsys.readouterr().out


def test_one_file_per_model_aligned_by_id(tmp_path):
    a = _write(
        tmp_path / "model_a.jsonl", [{"id": 1, "answer": "The answer is 12."}, {"id": 2, "answer": "7"}]
    )
    b = _write(tmp_path / "model_b.jsonl", [{"id": 2, "answer": "8"}, {"id": 1, "answer": "12"}])
    c = _write(
        tmp_path / "model_c.jsonl", [{"id": 1, "candidates": ["13", "so 12"]}, {"id": 2, "answer": "8"}]
    )
    out = tmp_path / "out.jsonl"
    args = ["vote", str(a), str(b), str(c), "-o", str(out), "--similarity", "answer", "--no-progress"]
    assert main(args) == 0
    rows = {r["id"]: r for r in _read(out)}
    assert rows[1]["answer"] == "12" and rows[1]["source"] == "model_a" and rows[1]["scores"][0] == 2.0
    assert rows[2]["answer"] == "8" and rows[2]["source"] == "model_b" and rows[2]["index"] == 1
    questions, _ = read_questions([a, b, c])
    assert questions[0].sources == ["model_a", "model_b", "model_c#0", "model_c#1"]


def test_combined_similarities_and_field_option(tmp_path):
    a = _write(tmp_path / "a.jsonl", [{"id": 1, "response": "Paris is the capital"}])
    b = _write(tmp_path / "b.jsonl", [{"id": 1, "response": "the capital is Paris"}])
    c = _write(tmp_path / "c.jsonl", [{"id": 1, "response": "Paris is the capital city"}])
    out = tmp_path / "o.jsonl"
    sims = ["--similarity", "char_rouge_l", "--similarity", "word_rouge_l=2", "--normalize", "rank"]
    assert main(["vote", str(a), str(b), str(c), "-o", str(out), "--field", "response", *sims]) == 0
    assert _read(out)[0]["winner"] == "Paris is the capital"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "in.jsonl:2: not valid JSON"),
        ("[1, 2]", "in.jsonl:2: expected a JSON object"),
        ('{"candidates": ["a"]}', 'in.jsonl:2: missing "id"'),
        ('{"id": 1, "candidates": []}', '"candidates" must be a non-empty list'),
        ('{"id": 2, "candidates": ["a", 5]}', "candidate 1 must be a string, found int"),
        ('{"id": 0, "candidates": ["a"]}', "duplicate id 0 \\(first on line 1\\)"),
        ('{"id": [1], "candidates": ["a"]}', '"id" must be a string or an integer'),
    ],
)
def test_bad_line_fails_with_its_number_and_leaves_no_output(tmp_path, capsys, line, message):
    inp = _write(tmp_path / "in.jsonl", [{"id": 0, "candidates": ["x", "y"]}, line])
    out = tmp_path / "out.jsonl"
    assert main(["vote", str(inp), "-o", str(out)]) == 2
    assert not out.exists()
    err = capsys.readouterr().err
    assert __import__("re").search(message, err), err
    assert os.listdir(tmp_path) == ["in.jsonl"]  # no partial file either


def test_skip_bad_lists_skipped_lines(tmp_path, capsys):
    inp = _write(
        tmp_path / "in.jsonl",
        [{"id": 0, "candidates": ["x", "y"]}, "{oops", {"id": 2, "candidates": ["z"]}],
    )
    out = tmp_path / "out.jsonl"
    assert main(["vote", str(inp), "-o", str(out), "--skip-bad"]) == 0
    assert [r["id"] for r in _read(out)] == [0, 2]
    captured = capsys.readouterr()
    assert "skipped" in captured.err and "in.jsonl:2: not valid JSON" in captured.err
    assert "1 bad line(s) skipped" in captured.out


def test_misaligned_model_files(tmp_path, capsys):
    a = _write(tmp_path / "a.jsonl", [{"id": 1, "answer": "x"}, {"id": 2, "answer": "y"}])
    b = _write(tmp_path / "b.jsonl", [{"id": 1, "answer": "x"}])
    out = tmp_path / "out.jsonl"
    assert main(["vote", str(a), str(b), "-o", str(out)]) == 2
    assert "id 2 is missing from" in capsys.readouterr().err and not out.exists()
    assert main(["vote", str(a), str(b), "-o", str(out), "--skip-bad", "--no-progress"]) == 0
    assert [r["id"] for r in _read(out)] == [1]
    no_field = _write(tmp_path / "c.jsonl", [{"id": 1, "reply": "x"}])
    with pytest.raises(InputDataError, match="c.jsonl:1: no text field"):
        read_questions([a, no_field])


def test_existing_output_and_option_errors(tmp_path, capsys):
    inp = _write(tmp_path / "in.jsonl", [{"id": 0, "candidates": ["x", "y"]}])
    out = _write(tmp_path / "out.jsonl", ["keep me"])
    assert main(["vote", str(inp), "-o", str(out)]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    assert main(["vote", str(inp), "-o", str(inp), "--overwrite"]) == 2
    assert "is also an input" in capsys.readouterr().err
    assert main(["vote", str(inp), "-o", str(out), "--overwrite", "--similarity", "nope=x"]) == 2
    assert "the weight must be a number" in capsys.readouterr().err
    assert out.read_text() == "keep me\n"
    assert main(["vote", str(tmp_path / "missing.jsonl"), "-o", str(tmp_path / "o.jsonl")]) == 2
    assert "no such input file" in capsys.readouterr().err


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    out = _write(tmp_path / "out.jsonl", ["old"])

    def records():
        yield {"a": 1}
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_jsonl_atomic(out, records(), overwrite=True)
    assert out.read_text() == "old\n" and os.listdir(tmp_path) == ["out.jsonl"]
    assert write_jsonl_atomic(out, [{"a": 1}, {"b": "中"}], overwrite=True) == 2
    assert _read(out) == [{"a": 1}, {"b": "中"}]


def test_command_line_entry_point(tmp_path):
    inp = _write(tmp_path / "in.jsonl", [{"id": 0, "candidates": ["abc", "abd", "xyz"]}])
    out = tmp_path / "out.jsonl"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [sys.executable, "-m", "lmfuse", "vote", str(inp), "-o", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert _read(out)[0]["index"] == 0


def test_answer_regex_implies_regex_kind(tmp_path):
    inp = _write(
        tmp_path / "in.jsonl", [{"id": 0, "candidates": ["Final: b (3)", "Final: a (9)", "Final: b (4)"]}]
    )
    out = tmp_path / "out.jsonl"
    assert (
        main(["vote", str(inp), "-o", str(out), "--similarity", "answer", "--answer-regex", r"Final: (\w)"])
        == 0
    )
    row = _read(out)[0]
    assert row["answer"] == "b" and row["index"] == 0 and row["scores"] == [1.0, 0.0, 1.0]
